"""The plain vLLM Deployment and Service: valid for `kubernetes-validate --strict`, weights
copied from S3 by init containers with the Secret by reference, pods that meet the
"restricted" Pod Security Standard, and GPUs with Guaranteed QoS."""

from pathlib import Path

import pytest
import yaml

from kubetune.serving import vllm
from kubetune.serving.artifacts import Resources, plan
from tests.support.outputs import finished_at, kubernetes_validate

GOLDEN = Path(__file__).parent / "golden"
OUT = "s3://artifacts/support-bot/"
CASES = {
    "vllm-merged": ({}, {"secret": "artifact-store"}),
    "vllm-adapter-4-gpus": (
        {"lora_r": 16},
        {"weights": "adapter", "secret": "artifact-store", "max_model_len": 8192, "gpus": 4},
    ),
    "vllm-merged-no-secret": ({}, {"name": "bot-v2"}),
}


def rendered(tmp_path, case: str, **render) -> list[dict]:
    job_options, options = CASES[case]
    options = dict(options)
    gpus = options.pop("gpus", 1)
    job = finished_at(tmp_path, OUT, **job_options)
    return vllm.render(plan(job, resources=Resources(gpus, "8", "48Gi"), **options), **render)


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden_yaml(case, tmp_path, request):
    text = yaml.safe_dump_all(rendered(tmp_path, case), sort_keys=True)
    golden = GOLDEN / f"{case}.yaml"
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing; create it with --update-golden"
    assert text == golden.read_text(), f"{golden} differs; review and rerun with --update-golden"


@pytest.mark.parametrize("kubernetes", ["1.29.0", "1.35.0"])
def test_kubernetes_validate_strict(tmp_path, kubernetes):
    documents = [d for case in CASES for d in rendered(tmp_path / case, case)]
    kubernetes_validate(documents, kubernetes)


def test_merged_weights_are_copied_then_served_under_the_name(tmp_path):
    deployment, service = rendered(tmp_path, "vllm-merged", image="registry.local/vllm:1")
    [fetch] = pod(deployment)["initContainers"]
    assert fetch["image"] == vllm.AWS_CLI_IMAGE
    assert fetch["command"] + fetch["args"][:2] == ["aws", "s3", "sync"]
    assert fetch["args"][-2:] == [f"{OUT}merged/", "/models/merged"]
    [server] = pod(deployment)["containers"]
    assert server["image"] == "registry.local/vllm:1"
    assert server["command"] == ["vllm", "serve"]
    assert server["args"] == ["/models/merged", "--served-model-name=support-bot", "--port=8000"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # no second set of GPUs


def test_adapter_mode_loads_the_base_and_the_lora_module(tmp_path):
    deployment, _ = rendered(tmp_path, "vllm-adapter-4-gpus")
    fetches = pod(deployment)["initContainers"]
    assert [(f["name"], f["args"][-2:]) for f in fetches] == [
        ("fetch-base", ["s3://models/llama-3-2-1b/", "/models/base"]),
        ("fetch-adapter", [f"{OUT}adapter/", "/models/adapter"]),
    ]
    [server] = pod(deployment)["containers"]
    assert server["args"] == [
        "/models/base",
        "--served-model-name=support-bot-base",
        "--enable-lora",
        "--lora-modules",
        "support-bot=/models/adapter",
        "--max-lora-rank=16",
        "--port=8000",
        "--tensor-parallel-size=4",
        "--max-model-len=8192",
    ]
    assert server["resources"]["limits"] == server["resources"]["requests"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert deployment["metadata"]["annotations"]["kubetune.io/base-model"] == (
        "s3://models/llama-3-2-1b/"
    )


def test_pods_are_restricted_and_reference_the_secret(tmp_path):
    deployment, _ = rendered(tmp_path, "vllm-adapter-4-gpus")
    spec = pod(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["initContainers"] + spec["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"name": "HOME", "value": "/cache"} in container["env"]
    for fetch in spec["initContainers"]:
        assert fetch["envFrom"] == [{"secretRef": {"name": "artifact-store"}}]
    assert "envFrom" not in spec["containers"][0]  # the server never holds the credentials
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    deployment, _ = rendered(tmp_path, "vllm-merged-no-secret")
    assert all("envFrom" not in c for c in pod(deployment)["initContainers"])


def test_kubernetes_validate_catches_a_misspelled_field(tmp_path):
    deployment, _ = rendered(tmp_path, "vllm-merged")
    pod(deployment)["containers"][0]["readinesProbe"] = {}
    with pytest.raises(AssertionError, match="readinesProbe"):
        kubernetes_validate([deployment])
