"""`kubetune serving OUTPUT_URI --runtime kserve|vllm`: the serving objects of a job finished on
S3 (written by the real trainer, or through the API types), never a credential value, and clear
answers for an unfinished job or artifacts a cluster cannot read."""

from pathlib import Path

import pytest
import yaml

from kubetune.storage import open_store
from kubetune_trainer.train import train
from tests.support.cli import kubetune
from tests.support.outputs import kubernetes_validate, write_finished
from tests.support.s3 import (  # noqa: F401
    ACCESS_KEY_ID,
    SECRET,
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)
from tests.support.training import config_for, make_job, runtime


def uploaded(folder: Path, uri: str) -> str:
    open_store(uri).upload_dir(folder, uri)
    return uri


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real (tiny, one-epoch) run's output folder, with merged weights."""
    root = make_job(tmp_path_factory.mktemp("serving"), samples=40)
    train(config_for(root, epoch=1, merge_weights=True), runtime(root))
    return root


def test_a_real_runs_artifacts_served_from_s3(trained, s3_endpoint):
    bucket = make_bucket()
    out = uploaded(trained / "out", f"s3://{bucket}/jobs/tiny/")
    base = uploaded(trained / "model", f"s3://{bucket}/models/tiny/")
    merged = kubetune("serving", out, "--runtime", "vllm", "--secret", "artifact-store")
    assert merged.returncode == 0, merged.stderr
    deployment, service = yaml.safe_load_all(merged.stdout)
    [fetch] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert fetch["args"][-2:] == [f"{out}merged/", "/models/merged"]
    # What the init container copies is what the trainer exported.
    assert open_store(out).exists(f"{out}merged/config.json")
    assert deployment["metadata"]["namespace"] == "test"  # the job's
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "tiny"
    kubernetes_validate([deployment, service])

    # Local mode trained from file://; the cluster reads the base model's copy on S3.
    refused = kubetune("serving", out, "--runtime", "kserve", "--weights", "adapter")
    assert refused.returncode == 2
    assert "the base model tiny-llama is at file://" in refused.stderr
    adapter = kubetune(
        "serving", out, "--runtime", "kserve", "--weights", "adapter", "--base-uri", base
    )
    assert adapter.returncode == 0, adapter.stderr
    [isvc] = yaml.safe_load_all(adapter.stdout)
    assert isvc["spec"]["predictor"]["storageUris"] == [
        {"uri": base, "mountPath": "/mnt/models/base"},
        {"uri": f"{out}adapter/", "mountPath": "/mnt/models/adapter"},
    ]
    assert "--max-lora-rank=8" in isvc["spec"]["predictor"]["model"]["args"]


@pytest.mark.parametrize("runtime_name", ["kserve", "vllm"])
def test_no_credential_value_in_the_objects(tmp_path, s3_endpoint, runtime_name):
    bucket = make_bucket()
    out = f"s3://{bucket}/support-bot/"
    uploaded(write_finished(tmp_path / "out", out), out)
    result = kubetune("serving", out, "--runtime", runtime_name, "--secret", "artifact-store")
    assert result.returncode == 0, result.stderr
    for value in (SECRET, ACCESS_KEY_ID, s3_endpoint):
        assert value not in result.stdout
    assert "artifact-store" in result.stdout
    if runtime_name == "kserve":  # the endpoint must reach KServe by the Secret's annotation
        assert result.stderr == (
            "kubetune: note: KServe reads a non-AWS S3 endpoint from the Secret's annotation, "
            "not from AWS_ENDPOINT_URL: kubectl annotate secret artifact-store "
            "serving.kserve.io/s3-endpoint=URL (docs/serving.md)\n"
        )
    else:
        assert result.stderr == ""


def test_a_local_folder_is_refused_with_the_copy_command(tmp_path):
    folder = write_finished(tmp_path / "out", (tmp_path / "out").as_uri())
    result = kubetune("serving", folder, "--runtime", "vllm")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"kubetune: error: OUTPUT_URI file://{folder}/: a cluster cannot read this machine's "
        f"files; copy the folder to S3 (aws s3 sync {folder}/ s3://BUCKET/PREFIX/) and pass "
        "that s3:// URI\n"
    )


def test_an_unfinished_job_exits_1(tmp_path, s3_endpoint):
    bucket = make_bucket()
    folder = write_finished(tmp_path / "out", f"s3://{bucket}/x/")
    (folder / "MANIFEST.json").unlink()
    (folder / "progress.json").write_text('{"epoch": 1, "step": 3, "total_steps": 9}')
    out = uploaded(folder, f"s3://{bucket}/x/")
    result = kubetune("serving", out, "--runtime", "kserve")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"kubetune: error: not finished: no MANIFEST.json at {out}MANIFEST.json; progress: "
        "step 3 of 9 (epoch 1)\n"
    )


def test_option_problems(tmp_path):
    folder = write_finished(tmp_path / "out", "s3://artifacts/b/")
    image = kubetune("serving", folder, "--runtime", "kserve", "--image", "x")
    assert (image.returncode, image.stderr) == (
        2,
        "kubetune: error: --image: only for --runtime vllm (KServe's runtime brings its own "
        "image)\n",
    )
    gpus = kubetune("serving", folder, "--runtime", "vllm", "--gpus", "0")
    assert gpus.returncode == 2 and "--gpus: '0': expected an integer >= 1" in gpus.stderr
    memory = kubetune("serving", folder, "--runtime", "vllm", "--memory", "lots")
    assert memory.returncode == 2 and "expected a quantity such as 8 or 32Gi" in memory.stderr
