"""Rendering is pure: the same Plan gives the same children, they validate against the
Training Operator's PyTorchJob CRD and Kubeflow Trainer's TrainJob CRD, and every pod is locked
down."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from kubetune.config import OperatorConfig
from kubetune.render.configmap import render_configmap
from kubetune.render.pytorchjob import render_pytorchjob
from kubetune.render.trainjob import render_trainjob
from tests.operator.test_resolve import HUB, PUBLIC, job, resolve
from tests.support.upstream import pytorchjob_crd, trainer_crd, why_not

GOLDEN = Path(__file__).parent / "golden"
OWNER = {"name": "bot", "uid": "uid-1"}


def rendered(**spec):
    plan = resolve(job(**spec))
    return render_configmap(plan, OWNER), render_pytorchjob(plan, OperatorConfig(), OWNER)


def rendered_trainjob(**spec):
    return render_trainjob(resolve(job(**spec)), OperatorConfig(), OWNER)


def patched_pod(trainjob) -> dict:
    """The pod template of kubetune's runtime patch (the one replicated job, `node`)."""
    [patch] = trainjob["spec"]["runtimePatches"]
    assert patch["manager"] == "kubetune.io/operator"
    [replicated] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    return replicated["template"]["spec"]["template"]


def pods(pytorchjob):
    return [r["template"]["spec"] for r in pytorchjob["spec"]["pytorchReplicaSpecs"].values()]


CASES = {
    "single-node-instance-type": {},
    "multi-node-queued": {
        "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 8, "nodes": 4},
        "scheduling": {"queueName": "team-a", "priorityClassName": "low"},
        "runPolicy": {"backoffLimit": 5, "activeDeadlineSeconds": 86400, "cleanPodPolicy": "All"},
    },
    "cpu-suspended": {
        "resources": {"accelerator": "none", "cpu": 4, "memory": "16Gi"},
        "suspend": True,
    },
    "trainium": {"resources": {"instanceType": "trn1.32xlarge", "nodes": 2}},
}


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden_yaml(case, request):
    configmap, pytorchjob = rendered(**CASES[case])
    text = yaml.safe_dump_all([configmap, pytorchjob], sort_keys=True)
    golden = GOLDEN / f"{case}.yaml"
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing; create it with --update-golden"
    assert text == golden.read_text(), f"{golden} differs; review and rerun with --update-golden"


@pytest.mark.parametrize("case", CASES)
def test_pytorchjob_validates_against_the_training_operator_crd(case):
    if not pytorchjob_crd():
        pytest.skip(why_not())
    crd = yaml.safe_load(pytorchjob_crd().read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _, pytorchjob = rendered(**CASES[case])
    errors = sorted(OAS30Validator(schema).iter_errors(pytorchjob), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_replicas_processes_and_accelerators():
    _, pj = rendered(**CASES["multi-node-queued"])
    replicas = pj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert pj["spec"]["nprocPerNode"] == "8"
    limits = replicas["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"
    policy = pj["spec"]["runPolicy"]
    # schedulingPolicy is read by gang schedulers (Volcano, scheduler-plugins) only; its
    # `queue` would name a Volcano queue, so Kueue's queue is the label alone.
    assert policy["schedulingPolicy"] == {"minAvailable": 4, "priorityClass": "low"}
    assert policy["suspend"] is True  # Kueue admits it by unsuspending
    assert pj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    _, pj = rendered(**CASES["single-node-instance-type"])
    assert "Worker" not in pj["spec"]["pytorchReplicaSpecs"]
    assert pj["spec"]["runPolicy"]["suspend"] is False


def test_pods_are_locked_down_and_carry_no_secret_values():
    configmap, pj = rendered(**CASES["multi-node-queued"])
    for pod in pods(pj):
        assert pod["securityContext"]["runAsNonRoot"] is True
        [c] = pod["containers"]
        assert c["name"] == "pytorch"
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {m["mountPath"] for m in c["volumeMounts"]} == {
            "/etc/kubetune",
            "/dev/shm",
            "/scratch",
            "/tmp",
            "/var/run/secrets/kubetune/model",  # the hub's model URLs (presigned access)
        }
        # Secrets by reference only, each channel under its own prefix; the hub's own Secret
        # is not among them: its models come through presigned URLs.
        assert c["envFrom"] == [
            {"prefix": "KUBETUNE_DATA_", "secretRef": {"name": "data-store"}},
            {"prefix": "KUBETUNE_OUTPUT_", "secretRef": {"name": "out-store"}},
        ]
        assert all("value" in e and "valueFrom" not in e for e in c["env"])
    config = json.loads(configmap["data"]["config.json"])
    assert config["kind"] == "TrainerConfig" and config["job"]["uid"] == "uid-1"
    assert "store" not in configmap["data"]["config.json"]


def test_children_are_owned_by_the_job_and_named_deterministically():
    configmap, pj = rendered()
    for child in (configmap, pj):
        [ref] = child["metadata"]["ownerReferences"]
        assert ref["uid"] == "uid-1" and ref["controller"] is True
        assert child["metadata"]["labels"]["kubetune.io/finetunejob"] == "bot"
    assert (configmap["metadata"]["name"], pj["metadata"]["name"]) == ("bot-trainer-config", "bot")
    assert rendered() == rendered()


GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
NEURON = {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}
CUSTOM = {"a100.box": {"accelerator": "nvidia", "accelerators": 2, "processesPerNode": 2}}
SIZED = {"accelerator": "nvidia", "acceleratorsPerNode": 2, "cpu": 20, "memory": "80Gi"}
# name: (job resources, hub model's default resources, operator config,
#        expected toleration, cpu, memory, (accelerator resource, count))
COMPUTE_PATHS = {
    "instance-type": ({"instanceType": "g5.12xlarge"}, None, {},
                      GPU, "43", "163Gi", ("nvidia.com/gpu", "4")),
    "by-count": ({"accelerator": "nvidia", "acceleratorsPerNode": 4}, None, {},
                 GPU, "12", "48Gi", ("nvidia.com/gpu", "4")),
    "hub-defaults": (None, {"accelerator": "nvidia", "acceleratorsPerNode": 4}, {},
                     GPU, "12", "48Gi", ("nvidia.com/gpu", "4")),
    "operator-default": (None, {}, {}, GPU, "3", "12Gi", ("nvidia.com/gpu", "1")),
    "operator-default-sized": (None, {}, {"defaultResources": SIZED},
                               GPU, "20", "80Gi", ("nvidia.com/gpu", "2")),
    "neuron-by-count": ({"accelerator": "neuron", "acceleratorsPerNode": 2}, None, {},
                        NEURON, "12", "48Gi", ("aws.amazon.com/neuron", "2")),
    "trainium-instance": ({"instanceType": "trn1.32xlarge"}, None, {},
                          NEURON, "115", "435Gi", ("aws.amazon.com/neuron", "16")),
    "custom-profile": ({"instanceType": "a100.box"}, None, {"instanceProfiles": CUSTOM},
                       GPU, "6", "24Gi", ("nvidia.com/gpu", "2")),
    "cpu": ({"accelerator": "none"}, None, {}, None, "2", "8Gi", None),
    "by-count-sized": ({"accelerator": "nvidia", "cpu": 7, "memory": "30Gi"}, None, {},
                       GPU, "7", "30Gi", ("nvidia.com/gpu", "1")),
}  # fmt: skip


@pytest.mark.parametrize(
    "resources, hub_defaults, operator, toleration, cpu, memory, accelerators",
    COMPUTE_PATHS.values(),
    ids=COMPUTE_PATHS,
)
def test_every_compute_path_schedules_on_tainted_nodes_as_guaranteed_pods(
    resources, hub_defaults, operator, toleration, cpu, memory, accelerators
):
    """GPU and Neuron node groups are tainted (docs/install-eks.md); pods of any compute path
    tolerate their kind's taint, request and limit CPU and memory alike (Guaranteed QoS, never
    BestEffort), request the scratch disk, and mount no API token."""
    hub = copy.deepcopy(HUB)
    if hub_defaults is not None:
        hub["spec"]["models"][0]["defaults"]["resources"] = hub_defaults
    config = OperatorConfig.model_validate(operator)
    spec = {"resources": resources} if resources else {}
    plan = resolve(job(**spec), hub, PUBLIC, config=config)
    for pod in pods(render_pytorchjob(plan, config, OWNER)):
        if toleration:
            assert toleration in pod["tolerations"]
        else:
            assert "tolerations" not in pod
        assert pod["automountServiceAccountToken"] is False
        [container] = pod["containers"]
        resources = container["resources"]
        assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == cpu
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == memory
        assert resources["requests"]["ephemeral-storage"] == str(config.scratch_size)
        if accelerators:
            name, count = accelerators
            assert resources["requests"][name] == resources["limits"][name] == count
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_replicas_restart_by_the_exit_code_contract():
    _, pj = rendered(**CASES["multi-node-queued"])
    for replica in pj["spec"]["pytorchReplicaSpecs"].values():
        assert replica["restartPolicy"] == "ExitCode"  # 1-127 fail at once, 128-255 retry
    configmap, _ = rendered(**CASES["multi-node-queued"])
    config = json.loads(configmap["data"]["config.json"])
    assert config["maxAttempts"] == 6  # runPolicy.backoffLimit 5 + the first start


# --- TrainJob (Kubeflow Trainer v2) --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_trainjob_matches_golden_yaml(case, request):
    configmap, _ = rendered(**CASES[case])
    text = yaml.safe_dump_all([configmap, rendered_trainjob(**CASES[case])], sort_keys=True)
    golden = GOLDEN / "trainjob" / f"{case}.yaml"
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing; create it with --update-golden"
    assert text == golden.read_text(), f"{golden} differs; review and rerun with --update-golden"


@pytest.mark.parametrize("case", CASES)
def test_trainjob_validates_against_the_trainer_crd(case):
    crd = trainer_crd("trainjobs")
    if not crd:
        pytest.skip(why_not())
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = sorted(OAS30Validator(schema).iter_errors(rendered_trainjob(**CASES[case])), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_trainjob_nodes_processes_accelerators_and_queue():
    tj = rendered_trainjob(**CASES["multi-node-queued"])
    spec = tj["spec"]
    assert spec["runtimeRef"] == {
        "name": "kubetune", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"
    }
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    resources = trainer["resourcesPerNode"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "8"
    assert resources["requests"]["ephemeral-storage"] == "200Gi"
    assert spec["suspend"] is True  # Kueue admits it by unsuspending
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert spec["activeDeadlineSeconds"] == 86400
    # Torch's reserved names are the Trainer's to set: a TrainJob that sets them is refused.
    assert not [e for e in trainer["env"] if e["name"].startswith("PET_")]
    assert "MASTER_ADDR" not in {e["name"] for e in trainer["env"]}
    single = rendered_trainjob(**CASES["single-node-instance-type"])["spec"]
    assert single["suspend"] is False and "activeDeadlineSeconds" not in single


def test_trainjob_pods_are_locked_down_and_carry_no_secret_values():
    tj = rendered_trainjob(**CASES["multi-node-queued"])
    pod = patched_pod(tj)
    assert pod["metadata"]["labels"] == {"kubetune.io/finetunejob": "bot"}
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert GPU in spec["tolerations"]
    [container] = spec["containers"]
    assert container["name"] == "node"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/kubetune", "/dev/shm", "/scratch", "/tmp",
                      "/var/run/secrets/kubetune/model"}  # fmt: skip
    assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in container["volumeMounts"]}
    # No envFrom in a runtime patch: each credential variable by reference, optional.
    env = tj["spec"]["trainer"]["env"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"data-store", "out-store"}
    assert all(r["optional"] is True for r in refs)
    assert all("value" not in e for e in tj["spec"]["trainer"]["env"] if "valueFrom" in e)
    named = {e["name"] for e in tj["spec"]["trainer"]["env"]}
    assert {"KUBETUNE_DATA_AWS_ACCESS_KEY_ID", "KUBETUNE_OUTPUT_AWS_ENDPOINT_URL"} <= named


def test_trainjob_is_owned_by_the_job_and_named_deterministically():
    tj = rendered_trainjob()
    [ref] = tj["metadata"]["ownerReferences"]
    assert ref["uid"] == "uid-1" and ref["controller"] is True
    assert tj["metadata"]["name"] == "bot"
    assert rendered_trainjob() == rendered_trainjob()


@pytest.mark.parametrize(
    "resources, hub_defaults, operator, toleration, cpu, memory, accelerators",
    COMPUTE_PATHS.values(),
    ids=COMPUTE_PATHS,
)
def test_trainjob_compute_paths_match_the_pytorchjob(
    resources, hub_defaults, operator, toleration, cpu, memory, accelerators
):
    """Both backends give pods the same placement and resources for every compute path."""
    hub = copy.deepcopy(HUB)
    if hub_defaults is not None:
        hub["spec"]["models"][0]["defaults"]["resources"] = hub_defaults
    config = OperatorConfig.model_validate(operator)
    spec = {"resources": resources} if resources else {}
    plan = resolve(job(**spec), hub, PUBLIC, config=config)
    [master, *_] = pods(render_pytorchjob(plan, config, OWNER))
    tj = render_trainjob(plan, config, OWNER)
    pod = patched_pod(tj)["spec"]
    assert pod.get("tolerations") == master.get("tolerations")
    assert pod.get("nodeSelector") == master.get("nodeSelector")
    assert tj["spec"]["trainer"]["resourcesPerNode"] == master["containers"][0]["resources"]
    assert tj["spec"]["trainer"]["image"] == master["containers"][0]["image"]


TRAINER = {
    "image": "registry.example.com/ml/kubetune-trainer-plugins:0.1.0",
    "dataFormat": {"name": "qa-csv", "options": {"questionColumn": "q"}},
    "callbacks": [{"name": "mlflow", "options": {"trackingUri": "http://mlflow:5000"}}],
    "env": [
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": "support"},
        {
            "name": "MLFLOW_TRACKING_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}},
        },
    ],
}


def test_spec_trainer_gives_the_image_env_by_reference_and_parts_to_both_backends():
    configmap, pytorchjob = rendered(trainer=TRAINER)
    trainjob = rendered_trainjob(trainer=TRAINER)
    containers = [pod["containers"][0] for pod in pods(pytorchjob)]
    containers.append(trainjob["spec"]["trainer"])
    for container in containers:
        assert container["image"] == TRAINER["image"]
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_EXPERIMENT_NAME"]["value"] == "support"
        assert env["MLFLOW_TRACKING_TOKEN"] == TRAINER["env"][1]  # the reference, no value
    for body, crd in ((trainjob, trainer_crd("trainjobs")), (pytorchjob, pytorchjob_crd())):
        if crd:  # the pinned upstream CRDs, where the module cache has them
            schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]
            errors = list(OAS30Validator(schema["openAPIV3Schema"]).iter_errors(body))
            assert not errors, [e.message for e in errors]
    config = json.loads(configmap["data"]["config.json"])
    chosen = {k: v for k, v in config["trainer"].items() if v is not None}
    assert chosen == {k: TRAINER[k] for k in ("dataFormat", "callbacks")}  # no image, no env
