"""The KServe InferenceService: valid against the pinned KServe release's CRD, merged weights by
storageUri, base model and adapter by storageUris with vLLM's LoRA flags, S3 credentials by a
ServiceAccount that lists the Secret (never its values)."""

from pathlib import Path

import pytest
import yaml

from kubetune.serving import kserve
from kubetune.serving.artifacts import Resources, plan
from tests.cluster.build import go_command
from tests.support.apiserver_rules import CrdValidator
from tests.support.outputs import finished_at, kubernetes_validate
from tests.support.upstream import kserve_crd, kserve_why_not

GOLDEN = Path(__file__).parent / "golden"
OUT = "s3://artifacts/support-bot/"
CASES = {
    "kserve-merged": ({}, {"secret": "artifact-store"}),
    "kserve-adapter-2-gpus": (
        {"lora_r": 32},
        {"weights": "adapter", "secret": "artifact-store", "max_model_len": 4096, "gpus": 2},
    ),
    "kserve-merged-no-secret": ({}, {"name": "bot-v2", "namespace": "serving"}),
}


def rendered(tmp_path, case: str) -> list[dict]:
    job_options, options = CASES[case]
    options = dict(options)
    gpus = options.pop("gpus", 1)
    job = finished_at(tmp_path, OUT, **job_options)
    return kserve.render(plan(job, resources=Resources(gpus, "8", "48Gi"), **options))


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden_yaml(case, tmp_path, request):
    text = yaml.safe_dump_all(rendered(tmp_path, case), sort_keys=True)
    golden = GOLDEN / f"{case}.yaml"
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing; create it with --update-golden"
    assert text == golden.read_text(), f"{golden} differs; review and rerun with --update-golden"


@pytest.fixture(scope="module")
def crd_validator() -> CrdValidator:
    crd = kserve_crd("inferenceservices")
    if not go_command():
        pytest.skip(kserve_why_not())
    assert crd, kserve_why_not()  # with Go, a module proxy that fails is a failure
    return CrdValidator(yaml.safe_load(crd.read_text()))


@pytest.mark.parametrize("case", CASES)
def test_the_inferenceservice_fits_kserves_crd(case, tmp_path, crd_validator):
    *others, isvc = rendered(tmp_path, case)
    assert crd_validator.create_problems(isvc) == []
    if others:
        kubernetes_validate(others)  # the ServiceAccount


def test_the_crd_check_catches_what_kserve_would_refuse(tmp_path, crd_validator):
    *_, isvc = rendered(tmp_path, "kserve-adapter-2-gpus")
    isvc["spec"]["predictor"]["model"]["storageUrl"] = OUT  # a typo
    isvc["spec"]["predictor"]["storageUris"][1]["mountPath"] = "mnt/models/adapter"
    assert crd_validator.create_problems(isvc)[:2] == [
        "spec.predictor.model.storageUrl: field not declared in schema",
        'spec.predictor.storageUris[1].mountPath: Invalid value: "mnt/models/adapter": '
        "'mnt/models/adapter' does not match '^/.*'",
    ]


def test_adapter_mode_mounts_both_under_one_parent_and_names_the_adapter(tmp_path):
    _, isvc = rendered(tmp_path, "kserve-adapter-2-gpus")
    predictor = isvc["spec"]["predictor"]
    # KServe requires multiple storageUris to share a parent folder, and no storageUri beside.
    assert predictor["storageUris"] == [
        {"uri": "s3://models/llama-3-2-1b/", "mountPath": "/mnt/models/base"},
        {"uri": f"{OUT}adapter/", "mountPath": "/mnt/models/adapter"},
    ]
    assert "storageUri" not in predictor["model"]
    assert predictor["model"]["args"] == [
        "--model_name=support-bot-base",
        "--model_dir=/mnt/models/base",
        "--enable-lora",
        "--lora-modules",
        "support-bot=/mnt/models/adapter",
        "--max-lora-rank=32",
        "--tensor-parallel-size=2",
        "--max_model_len=4096",
    ]
    limits = predictor["model"]["resources"]["limits"]
    assert limits == predictor["model"]["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == "2"


def test_credentials_by_reference_only(tmp_path):
    account, isvc = rendered(tmp_path, "kserve-merged")
    assert account["kind"] == "ServiceAccount"
    assert account["secrets"] == [{"name": "artifact-store"}]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == f"{OUT}merged/"
    [isvc] = rendered(tmp_path, "kserve-merged-no-secret")
    assert "serviceAccountName" not in isvc["spec"]["predictor"]
    assert isvc["metadata"]["name"] == "bot-v2"
    assert isvc["metadata"]["namespace"] == "serving"
    assert isvc["metadata"]["labels"]["kubetune.io/finetunejob"] == "support-bot"
