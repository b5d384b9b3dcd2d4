"""The training recipe end to end on CPU: tiny Llama, real files, loss goes down, artifacts."""

import json
import subprocess
import sys

import pytest

from kubetune.api.v1alpha1.exits import ExitCode
from kubetune.storage import open_store
from kubetune_trainer.artifacts import RetriesExhausted, claim_output
from kubetune_trainer.train import train
from tests.support.training import config_for, make_job, runtime


@pytest.fixture
def job(tmp_path):
    return make_job(tmp_path)


def test_instruction_tuning_learns_and_exports_complete_artifacts(job):
    metrics = train(config_for(job), runtime(job))
    losses = [e.eval_loss for e in metrics.epochs]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] * 0.9, losses
    out = job / "out"
    manifest = json.loads((out / "MANIFEST.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "merged/model.safetensors",
        "metrics.json",
        "config.json",
    } <= listed
    assert all((out / f["path"]).stat().st_size == f["size"] for f in manifest["files"])
    assert manifest["job"]["uid"] == "uid-1"
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "succeeded" and progress["done"]  # the file, as any reader sees it
    assert progress["step"] == progress["total_steps"] > 0
    assert progress["tokens_per_second"] > 0
    assert progress["epochs"] == 3 and progress["world_size"] == 1
    assert (progress["samples"], progress["validation_samples"]) == (320, 80)  # ratio 0.2
    assert progress["message"] is None and progress["stop_signal"] is None


def test_rerun_of_a_finished_job_does_nothing_and_another_job_is_refused(job):
    config = config_for(job, merge_weights=False)
    train(config, runtime(job))
    before = (job / "out" / "MANIFEST.json").stat().st_mtime_ns
    train(config, runtime(job))
    assert (job / "out" / "MANIFEST.json").stat().st_mtime_ns == before
    other = config.model_copy(update={"job": config.job.model_copy(update={"uid": "uid-2"})})
    path = job / "other.json"
    path.write_text(other.model_dump_json(by_alias=True))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.train", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"KUBETUNE_SCRATCH": str(job / "s2"), "PATH": ""},
    )
    assert result.returncode == 2
    assert "holds the output of job test/tiny (uid uid-1); choose another output URI" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    # Its failure is not recorded in the other job's progress.json.
    assert json.loads((job / "out" / "progress.json").read_text())["state"] == "succeeded"


def test_starts_beyond_max_attempts_fail_permanently(job):
    """The Training Operator recreates pods that exit retryably without counting them against
    backoffLimit: the trainer counts its own starts and gives up past max_attempts (exit 3)."""
    config = config_for(job).model_copy(update={"max_attempts": 2})
    store = open_store(config.output.uri, {})
    for start in (1, 2):  # rank 0 of each new pod counts; other ranks only check
        assert claim_output(store, config, count_start=True) is False
        assert claim_output(store, config, count_start=False) is False
        assert json.loads((job / "out" / "job.json").read_text())["starts"] == start
    with pytest.raises(RetriesExhausted, match="started 3 times, more than the 2 that runPolicy"):
        claim_output(store, config, count_start=True)
    path = job / "config.json"
    path.write_text(config.model_dump_json(by_alias=True))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.train", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"KUBETUNE_SCRATCH": str(job / "s")},
    )
    assert result.returncode == ExitCode.RETRIES_EXHAUSTED, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
