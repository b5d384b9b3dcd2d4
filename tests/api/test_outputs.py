"""The output files as API types (kubetune.api.v1alpha1.outputs): the JSON keys are the ones
trainers wrote before the types existed, files of older and newer trainers still read, and what
the trainer writes reads back as itself."""

import json

import pytest

from kubetune.api.v1alpha1 import (
    ArtifactManifest,
    OwnerRecord,
    ProgressReport,
    TrainingMetrics,
)
from kubetune.api.v1alpha1.outputs import InvalidOutput

# As the trainer wrote them before these types: every reader of such outputs must go on reading.
PROGRESS_BEFORE = {"epoch": 2, "step": 80, "total_steps": 80, "train_loss": 1.05,
                   "eval_loss": 2.77, "tokens_per_second": 6941.9, "eta_seconds": 0,
                   "done": True, "percent": 100}  # fmt: skip
EPOCH = {"epoch": 1, "train_loss": 3.25, "eval_loss": 2.78, "eval_perplexity": 16.09}
METRICS_BEFORE = {"best_epoch": 1, "train_loss": 3.25, "eval_loss": 2.78,
                  "eval_perplexity": 16.09, "tokens_per_second": 6941.9, "train_tokens": 8000,
                  "train_seconds": 1.15, "padding_fraction": 0.31, "steps": 40,
                  "world_size": 1, "epochs": [EPOCH]}  # fmt: skip
MANIFEST_BEFORE = {"job": {"name": "tiny", "namespace": "team-a", "uid": "u-1"},
                   "files": [{"path": "adapter/adapter_config.json", "size": 812,
                              "sha256": "ab" * 32}]}  # fmt: skip
OWNER_BEFORE = {"name": "tiny", "namespace": "team-a", "uid": "u-1", "starts": 2}


@pytest.mark.parametrize(
    "kind, before",
    [(TrainingMetrics, METRICS_BEFORE), (ArtifactManifest, MANIFEST_BEFORE),
     (OwnerRecord, OWNER_BEFORE)],
)  # fmt: skip
def test_the_files_keep_their_keys(kind, before):
    read = kind.read(json.dumps(before), "file:///out/x.json")
    dumped = json.loads(read.model_dump_json())
    assert {k: dumped[k] for k in before} == before  # every old key keeps its value
    added = {k: v for k, v in dumped.items() if k not in before | kind.model_computed_fields}
    assert added == {k: kind.model_fields[k].default for k in added}  # later fields: defaults


def test_an_older_manifest_has_its_sizes_from_its_files():
    old = {**MANIFEST_BEFORE, "files": [*MANIFEST_BEFORE["files"],
           {"path": "adapter/adapter_model.safetensors", "size": 3000, "sha256": "cd" * 32},
           {"path": "metrics.json", "size": 600, "sha256": "ef" * 32}]}  # fmt: skip
    read = ArtifactManifest.read(json.dumps(old), "file:///out/MANIFEST.json")
    assert read.model is None and read.merged_dtype is None  # not recorded back then
    assert read.sizes == {"adapter": 3812, "metrics.json": 600} and read.total_size == 4412
    written = json.loads(read.model_dump_json())
    assert (written["sizes"], written["total_size"]) == (read.sizes, read.total_size)
    # Recomputed on reading, whatever a file says: they cannot disagree with the files.
    assert ArtifactManifest.read(json.dumps({**old, "sizes": {"x": 1}}), "x").sizes == read.sizes


def test_progress_keeps_its_keys_and_an_older_file_reads_as_succeeded():
    report = ProgressReport.read(json.dumps(PROGRESS_BEFORE), "file:///out/progress.json")
    assert report.state == "succeeded" and report.done
    written = json.loads(report.model_dump_json())
    assert {k: written[k] for k in PROGRESS_BEFORE} == PROGRESS_BEFORE
    assert ProgressReport.read('{"step": 7}', "x").state == "training"  # the state of old files


def test_a_newer_trainers_fields_are_ignored():
    newer = {**METRICS_BEFORE, "grad_norm": 0.5, "epochs": [{**EPOCH, "lr": 1e-4}]}
    assert TrainingMetrics.read(json.dumps(newer), "x") == TrainingMetrics(**METRICS_BEFORE)
    report = ProgressReport.read(json.dumps({"state": "training", "gpu_memory": 3}), "x")
    assert report.state == "training"


def test_what_is_not_the_type_is_one_line_naming_the_file():
    with pytest.raises(InvalidOutput) as raised:
        TrainingMetrics.read('{"best_epoch": "first"}', "s3://out/job/metrics.json")
    message = str(raised.value)
    assert message.startswith("s3://out/job/metrics.json: not a valid TrainingMetrics: best_epoch:")
    assert "\n" not in message and "train_loss: Field required" in message
    with pytest.raises(InvalidOutput, match=r"^x: not a valid ProgressReport: \(file\): Invalid"):
        ProgressReport.read("{half", "x")
    with pytest.raises(InvalidOutput, match="state: Input should be 'starting'"):
        ProgressReport.read('{"state": "paused"}', "x")


def test_a_stopped_run_says_the_signal_and_the_step():
    stopped = ProgressReport(state="stopped", step=12, stop_signal="SIGTERM", message="stopped")
    again = ProgressReport.read(stopped.model_dump_json(), "x")
    assert again == stopped and again.ended and not again.done
    assert (again.stop_signal, again.step) == ("SIGTERM", 12)
