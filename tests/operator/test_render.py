"""Rendering is pure: the same Plan gives the same children, they validate against the
Training Operator's PyTorchJob CRD, and every pod is locked down."""

import json
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from kubetune.config import OperatorConfig
from kubetune.render.configmap import render_configmap
from kubetune.render.pytorchjob import render_pytorchjob
from tests.operator.test_resolve import job, resolve

GOLDEN = Path(__file__).parent / "golden"
PYTORCHJOB_CRD = (
    Path(__file__).parents[3] / "shared" / "crds-thirdparty" / ("kubeflow.org_pytorchjobs.yaml")
)
OWNER = {"name": "bot", "uid": "uid-1"}


def rendered(**spec):
    plan = resolve(job(**spec))
    return render_configmap(plan, OWNER), render_pytorchjob(plan, OperatorConfig(), OWNER)


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
    if not PYTORCHJOB_CRD.exists():
        pytest.skip(f"{PYTORCHJOB_CRD} is absent: the PyTorchJob CRD cannot be checked here")
    crd = yaml.safe_load(PYTORCHJOB_CRD.read_text())
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
    assert policy["schedulingPolicy"] == {
        "minAvailable": 4,
        "queue": "team-a",
        "priorityClass": "low",
    }
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
        }
        # Secrets by reference only, each channel under its own prefix.
        assert c["envFrom"] == [
            {"prefix": "KUBETUNE_DATA_", "secretRef": {"name": "data-store"}},
            {"prefix": "KUBETUNE_MODEL_", "secretRef": {"name": "model-store"}},
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
