"""A finished job's output folder without training: config.json, metrics.json and MANIFEST.json
written through the API types, as the trainer writes them (the weights files are listed, not
written: serving reads only what the manifest says was exported); and `kubernetes-validate` of
what serving renders from it."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from kubetune.api.v1alpha1 import (
    ArtifactManifest,
    Hyperparameters,
    TrainerConfig,
    TrainingMetrics,
)
from kubetune.api.v1alpha1.outputs import CONFIG, MANIFEST, METRICS
from kubetune.serving.artifacts import FinishedJob, read_finished
from kubetune.storage import join_uri

ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")
MERGED_FILES = ("merged/config.json", "merged/model.safetensors", "merged/tokenizer.json")


def write_finished(
    folder: Path,
    output_uri: str,
    *,
    merged: bool = True,
    source: str = "s3://models/llama-3-2-1b/",
    lora_r: int = 8,
    name: str = "support-bot",
    namespace: str = "team-a",
) -> Path:
    """folder gets the files of a finished job named namespace/name whose output URI is
    output_uri (where folder will be uploaded, or its file:// URI)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainerConfig.model_validate(
        {
            "job": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "model": {"modelId": "meta-textgeneration-llama-3-2-1b", "source": source},
            "data": {"train": "s3://datasets/support/train/"},
            "hyperparameters": Hyperparameters(lora_r=lora_r).model_dump(),
            "output": {"uri": output_uri},
        }
    )
    epoch = {"epoch": 1, "train_loss": 1.5, "eval_loss": 1.4, "eval_perplexity": 4.06}
    metrics = TrainingMetrics(
        best_epoch=1,
        train_loss=1.5,
        eval_loss=1.4,
        eval_perplexity=4.06,
        tokens_per_second=900.0,
        train_tokens=9000,
        train_seconds=10.0,
        padding_fraction=0.0,
        steps=10,
        world_size=1,
        epochs=[epoch],
    )
    listed = ADAPTER_FILES + (MERGED_FILES if merged else ())
    manifest = ArtifactManifest(
        job=config.job.model_dump(),
        files=[{"path": path, "size": 1000, "sha256": "0" * 64} for path in sorted(listed)],
    )
    (folder / CONFIG).write_text(config.model_dump_json(by_alias=True, indent=2))
    (folder / METRICS).write_text(metrics.model_dump_json(indent=2))
    (folder / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2))
    return folder


def finished_at(folder: Path, output_uri: str, **options) -> FinishedJob:
    """The FinishedJob the CLI reads from output_uri once folder (write_finished's files) is
    uploaded there, read from folder: for the pure tests, which need no S3 server."""
    write_finished(folder, output_uri, **options)
    local = read_finished(folder.as_uri())
    return FinishedJob(join_uri(output_uri, ""), local.manifest, local.config)


def kubernetes_validate(documents: list[dict], version: str = "1.35.0") -> str:
    """`kubernetes-validate --strict` of built-in objects: AssertionError with its report
    unless every one passed (it would only warn on a kind it has no schema for)."""
    text = yaml.safe_dump_all(documents)
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, "-"]
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len(documents), done.stdout
    return done.stdout
