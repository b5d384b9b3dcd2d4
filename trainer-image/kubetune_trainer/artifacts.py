"""Artifacts under the output URI, complete iff MANIFEST.json exists (it is written last).

adapter/ (LoRA safetensors + adapter_config.json + tokenizer), merged/ (when merge_weights),
metrics.json, config.json (the resolved TrainerConfig), loss_curve.png and loss_curve.csv,
MANIFEST.json (every file: size, sha256); the layout and the files' types are
kubetune.api.v1alpha1.outputs. job.json, written first, claims the prefix: another job's run
refuses it instead of mixing files.
"""

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from kubetune.api.v1alpha1 import ArtifactManifest, OwnerRecord, TrainerConfig, TrainingMetrics
from kubetune.api.v1alpha1.outputs import (
    ADAPTER,
    CONFIG,
    MANIFEST,
    MERGED,
    METRICS,
    OWNER,
    InvalidOutput,
    WeightsDtype,
)
from kubetune.storage import join_uri, room_for

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
    config: TrainerConfig,
    metrics: TrainingMetrics,
    store,
    staging: Path,
    needed: int,
    write: Callable[[Path], None],
) -> ArtifactManifest:
    """Write every artifact to `staging`: metrics.json, config.json and what `write` puts
    there (the model family's adapter/ and merged/, the callbacks' files); upload them, then
    MANIFEST.json, which it returns. `needed`: a lower bound of the bytes written."""
    shutil.rmtree(staging, ignore_errors=True)
    with room_for(staging, "the artifacts", needed):
        staging.mkdir(parents=True)
        (staging / METRICS).write_text(metrics.model_dump_json(indent=2))
        (staging / CONFIG).write_text(config.model_dump_json(by_alias=True, indent=2))
        write(staging)
    manifest = ArtifactManifest(
        job=config.job.model_dump(),
        model=config.model.model_dump(),
        merged_dtype=saved_dtype(staging / MERGED),
        files=listing(staging),
    )
    started = time.monotonic()
    store.upload_dir(staging, config.output.uri)
    store.write_bytes(
        join_uri(config.output.uri, MANIFEST), manifest.model_dump_json(indent=2).encode()
    )
    sizes = manifest.sizes
    log.info(
        "artifacts: %d files, %.1f MB (%s) uploaded to %s in %.1f s",
        len(manifest.files),
        manifest.total_size / 1e6,
        ", ".join(f"{n}/ {sizes[n] / 1e6:.1f} MB" for n in (ADAPTER, MERGED) if n in sizes),
        config.output.uri,
        time.monotonic() - started,
    )
    return manifest


def saved_dtype(folder: Path) -> str | None:
    """The dtype a saved model folder's config.json names (`dtype`, or older transformers'
    `torch_dtype`); None without the folder, or for a dtype the manifest does not record."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    dtype = saved.get("dtype") or saved.get("torch_dtype")
    return dtype if dtype in get_args(WeightsDtype) else None


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
