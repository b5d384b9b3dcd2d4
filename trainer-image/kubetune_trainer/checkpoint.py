"""Checkpoints under OUTPUT/checkpoints/step-NNNNNNNN/: trainable weights, optimizer and
scheduler, each rank's RNG, the data position and the epochs so far.

A checkpoint counts only once its CHECKPOINT.json (every file with size and sha256) is written,
last. A restarted run resumes from the newest complete one; the older ones are deleted when a
newer one is complete, keeping KEEP of them in case the newest fails its checksums.
"""

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kubetune.api.v1alpha1.outputs import CHECKPOINT_MANIFEST, CHECKPOINTS
from kubetune.storage import join_uri, room_for
from kubetune_trainer.artifacts import listing
from kubetune_trainer.scratch import tensor_bytes

log = logging.getLogger(__name__)

FOLDER = CHECKPOINTS
MANIFEST = CHECKPOINT_MANIFEST
KEEP = 2


@dataclass
class TrainState:
    """What the loop carries from step to step besides the model and optimizer."""

    epoch: int = 1  # the epoch in progress, 1-based like the logs
    epoch_step: int = 0  # its optimizer steps done: the data position within the epoch
    step: int = 0  # optimizer steps done since the start of the run
    epoch_losses: list[float] = field(default_factory=list)  # step losses of `epoch` so far
    history: list[dict] = field(default_factory=list)  # metrics of the finished epochs
    best: dict | None = None  # metrics of the best epoch so far
    best_weights: dict[str, torch.Tensor] | None = None  # its trainable weights (rank 0)
    callbacks: dict[str, dict] = field(default_factory=dict)  # each callback's state_dict()


@dataclass
class Checkpoint:
    state: TrainState
    weights: dict[str, torch.Tensor]  # trainable (LoRA) weights by parameter name
    optimizer: dict  # by parameter name too (torch.distributed.checkpoint layout)
    scheduler: dict
    rng: list[dict]  # per rank: {"cpu": state, "cuda": state or None}


def save(store, output_uri: str, staging: Path, checkpoint: Checkpoint) -> str:
    """Write checkpoint to OUTPUT/checkpoints/step-N/ (manifest last), then drop older ones."""
    state = checkpoint.state
    name = f"step-{state.step:08d}"
    uri = join_uri(output_uri, FOLDER, name)
    folder = staging / name
    shutil.rmtree(folder, ignore_errors=True)
    optimizer_file = {
        "optimizer": checkpoint.optimizer,
        "scheduler": checkpoint.scheduler,
        "rng": checkpoint.rng,
    }
    fields = json.dumps({k: v for k, v in asdict(state).items() if k != "best_weights"}, indent=2)
    needed = tensor_bytes([checkpoint.weights, state.best_weights, optimizer_file]) + len(fields)
    # A full scratch volume stops here, before anything is uploaded or marked complete.
    with room_for(folder, f"the checkpoint of step {state.step}", needed):
        folder.mkdir(parents=True)
        save_file(contiguous(checkpoint.weights), folder / "weights.safetensors")
        if state.best_weights is not None:
            save_file(contiguous(state.best_weights), folder / "best.safetensors")
        torch.save(optimizer_file, folder / "optimizer.pt")
        (folder / "state.json").write_text(fields)
    files = listing(folder)
    store.delete_prefix(uri)  # what a save killed half-way left at this step
    store.upload_dir(folder, uri)
    manifest = {"step": state.step, "epoch": state.epoch, "files": files}
    store.write_bytes(join_uri(uri, MANIFEST), json.dumps(manifest, indent=2).encode())
    shutil.rmtree(folder)
    prune(store, output_uri)
    log.info(
        "checkpoint: step %d (epoch %d, step %d of it) saved to %s",
        state.step,
        state.epoch,
        state.epoch_step,
        uri,
    )
    return uri


def complete(store, output_uri: str) -> list[tuple[str, dict]]:
    """(uri, manifest) of every complete checkpoint, newest first. Complete: the manifest is
    there and every file it lists is there with its size."""
    root = join_uri(output_uri, FOLDER)
    sizes: dict[str, dict[str, int]] = {}
    for key, size in store.list_files(root):
        folder, _, path = key.partition("/")
        sizes.setdefault(folder, {})[path] = size
    found = []
    for folder in sorted(sizes, reverse=True):
        if MANIFEST not in sizes[folder]:
            continue
        uri = join_uri(root, folder)
        manifest = json.loads(store.read_bytes(join_uri(uri, MANIFEST)))
        if all(sizes[folder].get(f["path"]) == f["size"] for f in manifest["files"]):
            found.append((uri, manifest))
    return found


def load(store, uri: str, manifest: dict, dest: Path) -> Checkpoint | None:
    """The checkpoint at uri, or None when its files fail the manifest's checksums."""
    # Named by content: a later save of the same step must not reuse this node's old copy.
    folder = dest / f"{uri.rstrip('/').rsplit('/', 1)[-1]}-{hash_of(manifest)}"
    store.download_dir(uri, folder)
    if [f for f in listing(folder) if f["path"] != MANIFEST] != manifest["files"]:
        log.warning("%s: files do not match %s; skipping this checkpoint", uri, MANIFEST)
        return None
    fields = json.loads((folder / "state.json").read_text())
    state = TrainState(**{k: v for k, v in fields.items() if k in TrainState.__dataclass_fields__})
    best = folder / "best.safetensors"
    state.best_weights = load_file(best) if best.exists() else None
    tensors = torch.load(folder / "optimizer.pt", weights_only=True)
    return Checkpoint(
        state=state,
        weights=load_file(folder / "weights.safetensors"),
        optimizer=tensors["optimizer"],
        scheduler=tensors["scheduler"],
        rng=tensors["rng"],
    )


def prune(store, output_uri: str) -> None:
    """Delete every checkpoint folder but the KEEP newest complete ones."""
    keep = {uri for uri, _ in complete(store, output_uri)[:KEEP]}
    root = join_uri(output_uri, FOLDER)
    for folder in {key.partition("/")[0] for key, _ in store.list_files(root)}:
        if join_uri(root, folder) not in keep:
            store.delete_prefix(join_uri(root, folder))


def delete_all(store, output_uri: str) -> int:
    """After the artifacts are complete the checkpoints have served their purpose."""
    return store.delete_prefix(join_uri(output_uri, FOLDER))


def rng_state(device: torch.device) -> dict:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().contiguous().cpu() for name, t in tensors.items()}


def hash_of(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
