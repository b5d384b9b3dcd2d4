"""The Helm chart, rendered by the real helm: lint, the objects it makes, their validity against
the Kubernetes schemas, the hardened pod, and the operator config it hands to the code."""

import re
import subprocess
import sys

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from kubetune import __version__
from kubetune.api.v1alpha1 import common
from kubetune.api.v1alpha1.exits import ExitCode, retryable
from kubetune.cli.main import parser
from kubetune.cli.operator_cmd import PEERING
from kubetune.config import (
    ConfigError,
    DefaultOutput,
    DefaultResources,
    Images,
    InstanceProfile,
    OperatorConfig,
    load_config,
)
from tests.chart.render import (
    ALL,
    ALL_OPTIONS,
    CHART,
    DEFAULT,
    NAMESPACE,
    find,
    objects,
    one,
    rendered,
    run_helm,
    template,
)
from tests.support.upstream import trainer_crd, why_not

VALUES = pytest.mark.parametrize("values", [DEFAULT, ALL], ids=["default", "all-options"])
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest EKS one.
KUBERNETES = ["1.29.0", "1.35.0"]
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "ClusterTrainingRuntime"}


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict:
    return yaml.safe_load((CHART / "values.schema.json").read_text())


# --- lint and render ------------------------------------------------------------------------


@VALUES
def test_lint_strict(values):
    done = run_helm("lint", "--strict", str(CHART), *values)
    assert done.returncode == 0 and "0 chart(s) failed" in done.stdout, done.stdout + done.stderr


def test_default_objects():
    """What `helm install` creates with no values; the CRDs come from crds/."""
    docs = objects(rendered("--include-crds"))
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ClusterKopfPeering", "kubetune"),
        ("ClusterRole", "kubetune"),
        ("ClusterRoleBinding", "kubetune"),
        ("ConfigMap", "kubetune-config"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("CustomResourceDefinition", "finetunejobs.kubetune.io"),
        ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
        ("CustomResourceDefinition", "modelhubs.kubetune.io"),
        ("Deployment", "kubetune"),
        ("PodDisruptionBudget", "kubetune"),
        ("Service", "kubetune-metrics"),
        ("ServiceAccount", "kubetune"),
    ]
    cluster_scoped = ("ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding")
    namespaced = [d for d in docs if d["kind"] not in (*cluster_scoped, "CustomResourceDefinition")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {NAMESPACE}


def test_all_options_objects():
    docs = objects(rendered(*ALL))
    watched = yaml.safe_load(ALL_OPTIONS.read_text())["watchNamespaces"]
    for kind in ("Role", "RoleBinding", "KopfPeering"):
        assert sorted(d["metadata"]["namespace"] for d in find(docs, kind)) == sorted(watched)
    assert not find(docs, "ClusterKopfPeering")
    assert len(find(docs, "ServiceMonitor")) == 1


@VALUES
@pytest.mark.parametrize("kubernetes", KUBERNETES)
def test_built_in_kinds_pass_kubernetes_validate_strict(values, kubernetes):
    """`helm template | kubernetes-validate --strict -`: unknown or misspelled fields fail.
    It has no schema for custom kinds and says so; those are checked below instead."""
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", kubernetes, "-"]
    text = rendered("--include-crds", *values)
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    unvalidated = set(re.findall(r"schema for kind (\w+)", done.stdout))
    assert unvalidated <= CUSTOM_KINDS, done.stdout
    built_in = [d for d in objects(text) if d["kind"] not in CUSTOM_KINDS]
    assert done.stdout.count(" passed for resource ") == len(built_in), done.stdout


@VALUES
def test_peering_objects_fit_their_crd_and_the_operator(values):
    crds = {
        c["spec"]["names"]["kind"]: c
        for c in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())
    }
    docs = objects(rendered(*values))
    peerings = find(docs, "ClusterKopfPeering") + find(docs, "KopfPeering")
    assert peerings
    for peering in peerings:
        crd = crds[peering["kind"]]
        assert peering["apiVersion"] == f"{crd['spec']['group']}/v1"
        assert peering["metadata"]["name"] == PEERING  # the name `kubetune operator` looks for
        assert ("namespace" in peering["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
        openapi = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        OAS30Validator(openapi).validate(peering)


def test_service_monitor_scrapes_the_metrics_port():
    """No ServiceMonitor schema offline (the Prometheus Operator's CRD): check what matters,
    that it selects the metrics Service and names its port."""
    docs = objects(rendered(*ALL))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# --- the operator pod -----------------------------------------------------------------------


@VALUES
def test_pod_is_hardened(values):
    pod = one(objects(rendered(*values)), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable path
    assert mounts["/etc/kubetune"]["readOnly"] is True


def test_pod_user_is_the_image_user():
    dockerfile = (CHART.parents[1] / "operator-image" / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)[-1]
    pod = one(objects(rendered()), "Deployment")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user


@VALUES
def test_operator_arguments_parse_and_match_the_ports(values):
    docs = objects(rendered(*values))
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The image's entrypoint is `kubetune operator`; the chart gives the flags.
    args = parser().parse_args(["operator", *container["args"]])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.metrics_port, args.health_port) == (ports["metrics"], ports["health"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert not args.standalone  # peering: replicas take turns instead of racing
    watched = sorted(args.namespace or [])
    assert watched == sorted(d["metadata"]["namespace"] for d in find(docs, "Role"))
    assert args.all_namespaces == (not watched)
    # kopf names this replica in the peering object by POD_ID.
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The config file is the ConfigMap's key, mounted where --config points.
    mounts = container["volumeMounts"]
    (mount,) = [m for m in mounts if args.config.parent.as_posix() == m["mountPath"]]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mount["name"]]
    configmap = one(docs, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert args.config.name in configmap["data"]


def test_config_change_rolls_the_pods():
    def checksum(*args):
        deployment = one(objects(template(*args)), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("--set", "defaultQueueName=team-a")


def test_pod_disruption_budget_only_with_several_replicas():
    assert not find(objects(template("--set", "replicaCount=1")), "PodDisruptionBudget")
    pdb = one(objects(rendered()), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


# --- the operator's config ------------------------------------------------------------------


def rendered_config(values) -> dict:
    return yaml.safe_load(one(objects(rendered(*values)), "ConfigMap")["data"]["config.yaml"])


@VALUES
def test_config_map_is_a_valid_operator_config(values, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rendered_config(values)))
    load_config(path)  # what `kubetune operator --config` does at startup


def test_default_values_are_the_code_defaults(tmp_path):
    """An install with no values behaves like the operator with no config file."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rendered_config(DEFAULT)))
    assert load_config(path) == OperatorConfig()


def test_all_options_values_arrive_in_the_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rendered_config(ALL)))
    config = load_config(path)
    assert config.trainer_service_account == "fine-tuner"
    assert config.default_queue_name == "ml-default"
    assert config.default_output.uri == "s3://ml-artifacts/fine-tuning/"
    assert config.default_output.secret_ref.name == "artifact-store"
    assert config.images.neuron.endswith("/kubetune/trainer:0.1.0-neuron")
    assert config.instance_profiles["g5.12xlarge"].node_selector == {
        "karpenter.sh/nodepool": "gpu-g5"
    }
    assert config.instance_profiles["c7i.8xlarge"].accelerator == "none"
    assert "p5.48xlarge" in config.instance_profiles  # built-ins stay
    assert (config.shm_size, config.termination_grace_seconds) == ("32Gi", 300)


def test_chart_values_become_the_file_render_takes(tmp_path):
    """Chart values and config keys are spelled differently (trainer.shmSize -> shmSize): the
    chart's own ConfigMap, from `helm template --show-only`, is what `--config` reads."""
    configmap = template("-f", str(ALL_OPTIONS), "--show-only", "templates/configmap.yaml")
    path = tmp_path / "configmap.yaml"
    path.write_text(configmap)
    config = load_config(path)
    assert (config.shm_size, config.default_queue_name) == ("32Gi", "ml-default")
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\n")
    with pytest.raises(ConfigError, match="a ConfigMap without data.config.yaml"):
        load_config(path)


def fields(model) -> set[str]:
    """The camelCase keys of a pydantic model, as the config file spells them."""
    return set(model.model_json_schema(by_alias=True)["properties"])


def test_every_operator_setting_has_a_value():
    """A setting added to OperatorConfig needs a value in the chart (and in all-options)."""
    config = rendered_config(ALL)
    assert set(config) == fields(OperatorConfig), "chart values vs kubetune.config.OperatorConfig"
    assert set(config["images"]) == fields(Images)
    assert set(config["defaultOutput"]) == fields(DefaultOutput)
    assert set(config["defaultResources"]) == fields(DefaultResources)
    keys = set().union(*(set(p) for p in config["instanceProfiles"].values()))
    assert keys == fields(InstanceProfile)


def test_default_values_name_this_release():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__  # the operator image tag when image.tag is empty
    assert chart_values()["trainer"]["images"] == Images().model_dump(by_alias=True)


# --- values.schema.json ---------------------------------------------------------------------


def test_schema_patterns_are_the_api_patterns():
    definitions = schema()["definitions"]
    assert definitions["quantity"]["anyOf"][1]["pattern"] == common.QUANTITY
    assert definitions["dnsLabel"]["pattern"] == common.DNS_LABEL
    assert definitions["dnsSubdomain"]["pattern"] == common.DNS_SUBDOMAIN
    s3 = definitions["s3Uri"]["pattern"]
    assert s3.startswith("^s3://") and s3[1:-1] in common.STORAGE_URI  # its s3:// branch
    instance_type = schema()["properties"]["instanceProfiles"]["propertyNames"]["pattern"]
    assert instance_type == common.INSTANCE_TYPE
    profile = definitions["instanceProfile"]
    assert set(profile["properties"]) == fields(InstanceProfile)
    accelerator = InstanceProfile.model_json_schema()["properties"]["accelerator"]["enum"]
    assert definitions["accelerator"]["enum"] == accelerator


BAD_VALUES = [  # (--set, what helm's error names)
    ("replicas=2", "additional properties 'replicas' not allowed"),
    ("replicaCount=two", "/replicaCount"),
    ("trainer.shmSize=16GB", "/trainer/shmSize"),
    ("logLevel=VERBOSE", "/logLevel"),
    ("defaultOutput.uri=file:///tmp/out/", "/defaultOutput/uri"),
    ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
    ("instanceProfiles.g5\\.xlarge.gpus=1", "additional properties 'gpus'"),
    ("instanceProfiles.g5\\.xlarge.accelerator=amd", "/accelerator"),
    ("metrics.serviceMonitor.interval=30", "/metrics/serviceMonitor/interval"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_schema_rejects_bad_values(setting, message):
    done = run_helm("template", "kubetune", str(CHART), "--set", setting)
    assert done.returncode != 0, f"--set {setting} rendered"
    assert message in done.stderr, done.stderr


def test_output_secret_without_uri_is_refused():
    done = run_helm("template", "kubetune", str(CHART), "--set", "defaultOutput.secretName=s3")
    assert done.returncode != 0
    assert "defaultOutput.secretName is set but defaultOutput.uri is empty" in done.stderr


def test_readme_documents_every_value():
    def paths(values: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            if isinstance(value, dict) and value and key != "resources":
                found += paths(value, f"{prefix}{key}.")
            else:
                found.append(prefix + key)
        return found

    readme = (CHART / "README.md").read_text()
    missing = [path for path in paths(chart_values()) if f"`{path}`" not in readme]
    assert not missing, f"charts/kubetune/README.md does not document {missing}"


# --- The ClusterTrainingRuntime of TrainJobs ----------------------------------------------------


def runtime(*values: str) -> dict | None:
    return next(iter(find(objects(rendered(*values)), "ClusterTrainingRuntime")), None)


TRAINER_SERVED = ("--api-versions", "trainer.kubeflow.org/v1alpha1/ClusterTrainingRuntime")


@pytest.mark.parametrize(
    "values, shipped",
    [
        ((), False),  # auto, and helm sees no Trainer v2 CRDs: PyTorchJob it will be
        (TRAINER_SERVED, True),  # auto on a cluster with Kubeflow Trainer v2
        (("--set", "trainingBackend=trainjob"), True),
        ((*TRAINER_SERVED, "--set", "trainingBackend=pytorchjob"), False),
        ((*TRAINER_SERVED, "--set", "trainingRuntime.create=false"), False),
    ],
)
def test_the_runtime_ships_where_trainjobs_can_run(values, shipped):
    assert (runtime(*values) is not None) == shipped


def test_the_runtime_fails_pods_by_the_exit_code_contract():
    """1-127 fail the job at once; 128-255 start a new pod (counted, bounded); disruptions are
    not counted (kubetune.api.v1alpha1.exits)."""
    job = runtime(*ALL)["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    disrupted = [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[0] == {"action": "Ignore", "onPodConditions": disrupted}
    counted, failed = rules[1]["onExitCodes"], rules[2]["onExitCodes"]
    assert rules[1]["action"] == "Count" and rules[2]["action"] == "FailJob"
    assert counted["operator"] == "In" and failed == {
        "containerName": "node", "operator": "NotIn", "values": [0]
    }
    assert counted["values"] == [code for code in range(1, 256) if retryable(code)]
    assert ExitCode.INFRASTRUCTURE in counted["values"]
    assert not any(retryable(code) for code in ExitCode if code in (1, 2, 3))
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 300  # trainer.terminationGraceSeconds
    [container] = pod["containers"]
    assert container["name"] == "node"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert job["backoffLimit"] == 100


@pytest.mark.parametrize("values", [ALL, ("--set", "trainingBackend=trainjob")])
def test_the_runtime_validates_against_the_trainer_crd(values):
    crd = trainer_crd("clustertrainingruntimes")
    if not crd:
        pytest.skip(why_not())
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = sorted(OAS30Validator(schema).iter_errors(runtime(*values)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
