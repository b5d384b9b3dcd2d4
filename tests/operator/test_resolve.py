"""Resolution of a FineTuneJob: hub sharing in every combination, references across hubs,
EULA and tasks, hyperparameter and compute layering, and the TrainerConfig it yields."""

import copy

import pytest

from kubetune.api.v1alpha1 import FineTuneJob, ModelHub
from kubetune.config import OperatorConfig
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.plan import plan

HUB = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelHub",
    "metadata": {"name": "curated", "namespace": "ml-platform"},
    "spec": {
        "sharedWith": {
            "namespaces": ["team-a"],
            "namespaceSelector": {"matchLabels": {"kubetune.io/hub": "curated"}},
        },
        "storage": {"secretRef": {"name": "model-store"}},
        "models": [
            {
                "modelId": "llama",
                "source": "s3://models/llama/",
                "eula": {"required": True, "url": "https://example.com/eula", "version": "3.2"},
                "defaults": {
                    "hyperparameters": {"epoch": 3, "lora_r": 16},
                    "resources": {"instanceType": "g5.12xlarge"},
                },
            },
            {"modelId": "mistral", "source": "s3://models/mistral/", "tasks": ["instruction"]},
            {
                "modelId": "qwen",
                "reference": {"hubRef": {"name": "public"}, "modelId": "qwen-0-5b"},
                "defaults": {"hyperparameters": {"lora_r": 4}},
            },
        ],
    },
    "status": {"models": [{"modelId": m, "ready": True} for m in ("llama", "mistral", "qwen")]},
}
PUBLIC = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelHub",
    "metadata": {"name": "public", "namespace": "ml-platform"},
    "spec": {
        "models": [
            {
                "modelId": "qwen-0-5b",
                "source": "s3://public/qwen/",
                "defaults": {"hyperparameters": {"lora_r": 2, "lora_alpha": 8}},
            }
        ]
    },
    "status": {"models": [{"modelId": "qwen-0-5b", "ready": True}]},
}


def job(namespace="team-a", model="llama", **spec):
    return FineTuneJob.model_validate(
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "bot", "namespace": namespace},
            "spec": {
                "model": {
                    "hubRef": {"name": "curated", "namespace": "ml-platform"},
                    "modelId": model,
                },
                "acceptEula": True,
                "data": {"train": "s3://data/train/", "secretRef": {"name": "data-store"}},
                "output": {"uri": "s3://out/bot/", "secretRef": {"name": "out-store"}},
                **spec,
            },
        }
    )


class Cluster:
    """Hubs and namespace labels, as the operator reads them from the API server."""

    def __init__(self, *hubs, labels=None):
        self.hubs = {
            (h["metadata"]["namespace"], h["metadata"]["name"]): ModelHub.model_validate(h)
            for h in hubs
        }
        self.labels = labels or {}

    def hub(self, namespace, name):
        return self.hubs.get((namespace, name))

    def namespace_labels(self, namespace):
        return self.labels.get(namespace)


def resolve(j, *hubs, labels=None, config=None, require_ready=True):
    cluster = Cluster(*(hubs or (HUB, PUBLIC)), labels=labels)
    return plan(j, "uid-1", cluster, config or OperatorConfig(), require_ready=require_ready)


def denied(j, *hubs, labels=None):
    with pytest.raises(ResolveError) as err:
        resolve(j, *hubs, labels=labels)
    return err.value


@pytest.mark.parametrize(
    "namespace, labels, allowed",
    [
        ("ml-platform", {}, True),  # the hub's own namespace
        ("team-a", {}, True),  # listed
        ("team-b", {"team-b": {"kubetune.io/hub": "curated"}}, True),  # selector matches
        ("team-c", {"team-c": {"kubetune.io/hub": "other"}}, False),  # selector misses
        ("team-d", {}, False),  # neither listed nor labelled
    ],
)
def test_hub_sharing(namespace, labels, allowed):
    if allowed:
        assert resolve(job(namespace), labels=labels).model.source == "s3://models/llama/"
    else:
        err = denied(job(namespace), labels=labels)
        assert err.reason == "HubAccessDenied" and not err.retry
        assert f"not shared with namespace {namespace}" in err.message


def test_hub_without_sharing_serves_only_its_own_namespace():
    private = copy.deepcopy(HUB)
    del private["spec"]["sharedWith"]
    assert denied(job("team-a"), private, PUBLIC).reason == "HubAccessDenied"
    assert resolve(job("ml-platform"), private, PUBLIC).model.model_id == "llama"


def test_selector_expressions():
    hub = copy.deepcopy(HUB)
    hub["spec"]["sharedWith"] = {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                {"key": "frozen", "operator": "DoesNotExist"},
            ]
        }
    }
    ok = {"team-x": {"tier": "gold"}}
    assert resolve(job("team-x"), hub, PUBLIC, labels=ok).model.model_id == "llama"
    frozen = {"team-x": {"tier": "gold", "frozen": "yes"}}
    assert denied(job("team-x"), hub, PUBLIC, labels=frozen).reason == "HubAccessDenied"


def test_references_resolve_across_hubs_with_nearest_defaults_winning():
    p = resolve(job(model="qwen"))
    assert p.model.source == "s3://public/qwen/"
    assert p.hyperparameters.lora_r == 4  # curated entry over the public one
    assert p.hyperparameters.lora_alpha == 8  # public default where curated says nothing
    assert p.hyperparameters.epoch == 5  # JumpStart default
    assert p.secrets == {"data": "data-store", "output": "out-store"}  # public hub: no secret


def test_referenced_hub_must_be_shared_with_the_referring_hub():
    public = copy.deepcopy(PUBLIC)
    public["metadata"]["namespace"] = "vendors"
    hub = copy.deepcopy(HUB)
    hub["spec"]["models"][2]["reference"]["hubRef"]["namespace"] = "vendors"
    err = denied(job(model="qwen"), hub, public)
    assert err.reason == "HubAccessDenied"
    said = "ModelHub vendors/public does not exist or is not shared with ModelHub ml-platform/cu"
    assert said in err.message


def test_reference_cycle_is_reported_with_the_chain():
    public = copy.deepcopy(PUBLIC)
    public["spec"]["models"][0] = {
        "modelId": "qwen-0-5b",
        "reference": {"hubRef": {"name": "curated"}, "modelId": "qwen"},
    }
    err = denied(job(model="qwen"), HUB, public)
    assert err.reason == "ReferenceCycle"
    assert (
        "ml-platform/curated:qwen -> ml-platform/public:qwen-0-5b -> ml-platform/curated:qwen"
        in (err.message)
    )


def test_dangling_reference_and_unknown_model():
    err = denied(job(model="qwen"), HUB)
    assert err.reason == "HubNotFound" and err.retry
    err = denied(job(model="gpt-9"))
    assert err.reason == "ModelNotFound" and not err.retry
    assert "has no model 'gpt-9' (it has: llama, mistral, qwen)" in err.message


def test_missing_hub_and_unready_model_wait_instead_of_failing():
    own = job(namespace="ml-platform")  # a hub of the job's own namespace: waited for
    assert denied(own, PUBLIC).reason == "HubNotFound" and denied(own, PUBLIC).retry
    unready = copy.deepcopy(HUB)
    unready["status"]["models"][0] = {
        "modelId": "llama",
        "ready": False,
        "message": "no config.json",
    }
    err = denied(job(), unready, PUBLIC)
    assert err.reason == "ModelNotReady" and err.retry and "no config.json" in err.message
    unchecked = copy.deepcopy(HUB)
    del unchecked["status"]
    assert denied(job(), unchecked, PUBLIC).reason == "ModelNotReady"
    # Local mode has no hub status: it does not wait for one.
    assert resolve(job(), unchecked, PUBLIC, require_ready=False).model.model_id == "llama"


def test_eula_must_be_accepted():
    err = denied(job(acceptEula=False))
    assert err.reason == "EulaNotAccepted" and not err.retry
    assert "version 3.2, https://example.com/eula" in err.message
    assert "spec.acceptEula: true" in err.message


def test_task_must_be_offered():
    err = denied(job(model="mistral"))
    assert err.reason == "TaskNotSupported"
    assert "not offered for domain-adaptation tuning (tasks: instruction)" in err.message
    ok = job(model="mistral", hyperparameters={"instruction_tuned": True})
    assert resolve(ok).hyperparameters.instruction_tuned


def test_layers_valid_alone_can_be_invalid_together():
    hub = copy.deepcopy(HUB)
    hub["spec"]["models"][0]["defaults"]["hyperparameters"] = {"enable_fsdp": True}
    err = denied(job(hyperparameters={"int8_quantization": True}), hub, PUBLIC)
    assert err.reason == "InvalidHyperparameters"
    assert "int8_quantization and enable_fsdp cannot both be true" in err.message


def test_compute_from_instance_profile_and_job_overrides():
    p = resolve(job())
    c = p.compute
    assert (c.accelerator, c.accelerators, c.processes_per_node, c.nodes) == ("nvidia", 4, 4, 1)
    assert c.node_selector == {"node.kubernetes.io/instance-type": "g5.12xlarge"}
    assert c.resource_name == "nvidia.com/gpu" and c.memory == "163Gi"
    # The job's accelerator fields replace the hub's instanceType as a whole; nodes add up.
    p = resolve(job(resources={"accelerator": "nvidia", "acceleratorsPerNode": 2, "nodes": 3}))
    assert (p.compute.accelerators, p.compute.nodes, p.compute.world_size) == (2, 3, 6)
    assert p.compute.instance_type is None and p.compute.node_selector == {}
    p = resolve(job(resources={"accelerator": "none", "cpu": 4}))
    assert (p.compute.accelerator, p.compute.accelerators, p.compute.resource_name) == (
        "none",
        0,
        None,
    )
    p = resolve(job(resources={"instanceType": "trn1.32xlarge"}))
    assert (p.compute.resource_name, p.compute.accelerators, p.compute.processes_per_node) == (
        "aws.amazon.com/neuron",
        16,
        32,
    )


def test_unknown_instance_type_names_the_field_and_the_known_ones():
    err = denied(job(resources={"instanceType": "x9.huge"}))
    assert err.reason == "UnknownInstanceType"
    assert err.message.startswith("spec.resources.instanceType: x9.huge has no instance profile")
    assert "g5.12xlarge" in err.message


def test_operator_config_adds_profiles_and_default_output():
    config = OperatorConfig.model_validate(
        {
            "instanceProfiles": {"x9.huge": {"accelerator": "nvidia", "accelerators": 2}},
            "defaultOutput": {"uri": "s3://ml-artifacts", "secretRef": {"name": "artifacts"}},
        }
    )
    j = job(resources={"instanceType": "x9.huge"})
    j.spec.output = None
    p = resolve(j, config=config)
    assert p.compute.accelerators == 2
    assert p.output_uri == "s3://ml-artifacts/team-a/bot/"
    assert p.secrets["output"] == "artifacts"
    j = job()
    j.spec.output = None
    err = denied(j)
    assert err.reason == "NoOutput" and "set spec.output.uri" in err.message


def test_trainer_config_is_complete_and_holds_no_secret_names():
    p = resolve(job(hyperparameters={"learning_rate": 0.0002}))
    config = p.trainer_config
    assert config.job.uid == "uid-1" and config.job.namespace == "team-a"
    assert config.model.source == "s3://models/llama/"
    assert config.hyperparameters.learning_rate == 0.0002
    assert config.hyperparameters.epoch == 3 and config.hyperparameters.lora_r == 16
    assert config.output.uri == "s3://out/bot/"
    text = config.model_dump_json()
    assert "store" not in text  # secrets travel as envFrom references, not in the config


def test_a_bad_operator_config_is_one_line_naming_each_field(tmp_path):
    from kubetune.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text("images:\n  nvidia: 5\nshmSize: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: invalid operator config: images.nvidia: 5: must be a string; "
        "shmSize: 'lots': must be a Kubernetes quantity such as 8, 500m, 32Gi"
    )
