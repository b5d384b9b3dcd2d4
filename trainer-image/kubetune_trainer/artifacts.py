"""Artifacts under the output URI, complete iff MANIFEST.json exists (it is written last).

adapter/ (LoRA safetensors + adapter_config.json + tokenizer), merged/ (when merge_weights),
metrics.json, config.json (the resolved TrainerConfig), loss_curve.png and loss_curve.csv,
MANIFEST.json (every file: size, sha256); the layout and the files' types are
kubetune.api.v1alpha1.outputs. job.json, written first, claims the prefix: another job's run
refuses it instead of mixing files.
"""

import hashlib
import logging
import shutil
import time
from pathlib import Path

from kubetune.api.v1alpha1 import (
    ArtifactManifest,
    Hyperparameters,
    OwnerRecord,
    TrainerConfig,
    TrainingMetrics,
)
from kubetune.api.v1alpha1.outputs import (
    ADAPTER,
    CONFIG,
    MANIFEST,
    MERGED,
    METRICS,
    OWNER,
    InvalidOutput,
)
from kubetune.storage import join_uri, room_for
from kubetune_trainer import losscurve
from kubetune_trainer.scratch import tensor_bytes

log = logging.getLogger(__name__)


class OutputTaken(ValueError):
    """The output URI belongs to another job."""


class RetriesExhausted(RuntimeError):
    """This job was started more often than its config allows (max_attempts)."""


def claim_output(store, config: TrainerConfig, count_start: bool) -> bool:
    """Claim the output prefix for this job; True when its artifacts are already complete.
    `count_start` (rank 0): count this start in the owner file, within max_attempts."""
    owner_uri = join_uri(config.output.uri, OWNER)
    owner = read_owner(store, owner_uri) if store.exists(owner_uri) else None
    if owner is not None and owner.uid != config.job.uid:
        raise OutputTaken(
            f"{config.output.uri}: holds the output of job {owner.namespace}/{owner.name} "
            f"(uid {owner.uid}); choose another output URI"
        )
    complete = owner is not None and store.exists(join_uri(config.output.uri, MANIFEST))
    if complete or (owner is not None and not count_start):
        return complete
    starts = (owner.starts if owner else 0) + (1 if count_start else 0)
    if config.max_attempts is not None and starts > config.max_attempts:
        raise RetriesExhausted(
            f"started {starts} times, more than the {config.max_attempts} that "
            f"runPolicy.backoffLimit allows ({config.max_attempts - 1} retries); the earlier "
            "starts ended retryably (preemption, out of memory, a lost node or storage): see "
            "the pods' events and logs"
        )
    record = OwnerRecord(**config.job.model_dump(), starts=starts)
    store.write_bytes(owner_uri, record.model_dump_json().encode())
    return False


def read_owner(store, uri: str) -> OwnerRecord:
    try:
        return OwnerRecord.read(store.read_bytes(uri), uri)
    except InvalidOutput as err:
        raise OutputTaken(
            f"{err}: so the prefix may hold anything; choose another output URI"
        ) from None


def export(
    model,
    tokenizer,
    config: TrainerConfig,
    hp: Hyperparameters,
    metrics: TrainingMetrics,
    store,
    staging: Path,
    step_losses: list[list] | None = None,
) -> ArtifactManifest:
    """Write every artifact to `staging`, upload it, then MANIFEST.json, which it returns."""
    shutil.rmtree(staging, ignore_errors=True)
    adapter = [p for p in model.parameters() if p.requires_grad]
    # The adapter, and with merge_weights the whole model: a lower bound on what is written.
    needed = tensor_bytes(adapter + (list(model.parameters()) if hp.merge_weights else []))
    with room_for(staging, "the artifacts", needed):
        staging.mkdir(parents=True)
        model.save_pretrained(staging / ADAPTER)
        tokenizer.save_pretrained(staging / ADAPTER)
        (staging / METRICS).write_text(metrics.model_dump_json(indent=2))
        (staging / CONFIG).write_text(config.model_dump_json(by_alias=True, indent=2))
        if step_losses:  # [epoch, step, loss] per step
            losscurve.write(staging, step_losses, [e.model_dump() for e in metrics.epochs])
        if hp.merge_weights:
            # Last: merging folds the adapter into the base weights in place.
            merged = model.merge_and_unload()
            merged.save_pretrained(staging / MERGED)
            tokenizer.save_pretrained(staging / MERGED)
    manifest = ArtifactManifest(job=config.job.model_dump(), files=listing(staging))
    started = time.monotonic()
    store.upload_dir(staging, config.output.uri)
    store.write_bytes(
        join_uri(config.output.uri, MANIFEST), manifest.model_dump_json(indent=2).encode()
    )
    total = sum(f.size for f in manifest.files)
    log.info(
        "artifacts: %d files, %.1f MB uploaded to %s in %.1f s",
        len(manifest.files),
        total / 1e6,
        config.output.uri,
        time.monotonic() - started,
    )
    return manifest


def listing(folder: Path) -> list[dict]:
    """Every file under folder with its path, size and sha256: the body of a manifest (an
    ArtifactManifest's files, a checkpoint's)."""
    return [
        {"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
