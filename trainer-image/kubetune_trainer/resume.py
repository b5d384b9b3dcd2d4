"""Checkpoints as the recipe uses them: resume from the newest one every rank can read, and
save one (every rank gathers its share; rank 0 writes)."""

import logging
import shutil

from kubetune_trainer import checkpoint, distributed
from kubetune_trainer.checkpoint import Checkpoint, TrainState

log = logging.getLogger("kubetune.train")
STAGING = "checkpoint-staging"


def resume(recipe) -> TrainState:
    """Load the newest complete checkpoint that every rank can read; a fresh state if none."""
    runtime, uri_root = recipe.runtime, recipe.config.output.uri
    if runtime.is_main:  # what a save killed half-way left holds scratch space for nothing
        shutil.rmtree(recipe.scratch / STAGING, ignore_errors=True)
    for uri, manifest in checkpoint.complete(recipe.output, uri_root):
        saved = checkpoint.load(recipe.output, uri, manifest, recipe.scratch / "checkpoints")
        readable = distributed.all_sum([float(saved is not None)], runtime)[0]
        if readable < runtime.world_size:
            continue  # the ranks must agree on one checkpoint; try the one before
        distributed.load_trainable_state(
            recipe.model, recipe.optimizer, saved.weights, saved.optimizer
        )
        recipe.scheduler.load_state_dict(saved.scheduler)
        if len(saved.rng) == runtime.world_size:
            checkpoint.set_rng_state(saved.rng[runtime.rank], runtime.device)
        log.info(
            "resuming from %s: epoch %d, step %d done", uri, saved.state.epoch, saved.state.step
        )
        return saved.state
    return TrainState()


def save(recipe) -> str | None:
    """A checkpoint of the run as it is now; its URI on rank 0, None on the others."""
    state, runtime = recipe.state, recipe.runtime
    state.callbacks = {
        name: callback.state_dict()
        for name, callback in recipe.callbacks_by_name.items()
        if hasattr(callback, "state_dict")
    }
    weights, optimizer = distributed.trainable_state(recipe.model, recipe.optimizer)
    rng = distributed.all_gather(checkpoint.rng_state(runtime.device), runtime)
    uri = None
    if runtime.is_main:
        saved = Checkpoint(state, weights, optimizer, recipe.scheduler.state_dict(), rng)
        uri = checkpoint.save(
            recipe.output, recipe.config.output.uri, recipe.scratch / STAGING, saved
        )
    distributed.barrier(runtime)  # a stopping rank must not exit before the upload
    return uri
