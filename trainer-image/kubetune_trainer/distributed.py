"""One job, several processes: the process group torchrun describes, the few collectives the
recipe needs, and trainable state gathered whole whatever the strategy (strategies/ wrap the
model). With one process every function here is a no-op or the identity.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from kubetune_trainer.runtime import Runtime

log = logging.getLogger(__name__)

# Full (unsharded) tensors of the trainable weights only, on CPU: a LoRA checkpoint of an 8B
# model is ~40M params, while the frozen base weights are already in the model folder.
FULL_TRAINABLE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
LOAD_FULL = StateDictOptions(full_state_dict=True, strict=False)
# Rank 0's full weights to every rank (the others pass none), resharded where sharded.
FROM_RANK0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)


@contextmanager
def process_group(runtime: Runtime) -> Iterator[None]:
    """Join the job's processes (MASTER_ADDR/MASTER_PORT from torchrun) for the block's span."""
    if runtime.world_size == 1:
        yield
        return
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
        dist.init_process_group("nccl", device_id=runtime.device)
    else:
        dist.init_process_group("gloo")  # CPU: tests and CPU-only clusters
    log.info("rank %d of %d joined (%s)", runtime.rank, runtime.world_size, dist.get_backend())
    try:
        yield
        # Tear down together: gloo can abort a rank whose peer closes its sockets while the
        # rank is still tearing down (seen once, under load, as SIGABRT after a finished run).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def all_sum(values: list[float], runtime: Runtime) -> list[float]:
    """Element-wise sum over ranks of a few numbers (one small all-reduce)."""
    if runtime.world_size == 1:
        return values
    device = runtime.device if runtime.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather(obj, runtime: Runtime) -> list:
    """Every rank's `obj`, in rank order."""
    if runtime.world_size == 1:
        return [obj]
    gathered = [None] * runtime.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(runtime: Runtime) -> None:
    if runtime.world_size > 1:
        dist.barrier()


def trainable_state(model, optimizer) -> tuple[dict, dict]:
    """Full trainable weights and optimizer state, keyed by parameter name (so a checkpoint
    does not depend on the world size). Collective under FSDP; complete on rank 0."""
    weights, optimizer_state = get_state_dict(model, optimizer, options=FULL_TRAINABLE)
    return only_trainable(model, weights), optimizer_state


def trainable_weights(model) -> dict:
    """Full trainable weights by parameter name, e.g. to keep the best epoch's: a copy, as
    the state dict of a model on CPU holds the live parameters, which later steps change.
    Collective under FSDP; complete on rank 0."""
    weights = only_trainable(model, get_model_state_dict(model, options=FULL_TRAINABLE))
    return {name: tensor.clone() for name, tensor in weights.items()}


def load_trainable_weights(model, weights: dict | None, runtime: Runtime) -> None:
    """Rank 0's full trainable `weights` (trainable_weights' result) into the model on every
    rank, e.g. to evaluate the best epoch's. Collective; only rank 0's `weights` are read."""
    if runtime.world_size == 1:
        model.load_state_dict(weights, strict=False)
        return
    # A copy: set_model_state_dict fills the dict it is given with the model's own (sharded)
    # tensors, and the caller keeps `weights` to export.
    set_model_state_dict(model, dict(weights) if runtime.is_main else {}, options=FROM_RANK0)


def only_trainable(model, weights: dict) -> dict:
    """`weights` less frozen ones that slip through under another name: a model whose
    embedding is shared (T5's encoder, decoder and head) lists it once per name, and
    ignore_frozen_params drops only the first."""
    names = {
        name.removeprefix("module.") for name, p in model.named_parameters() if p.requires_grad
    }
    return {name: tensor for name, tensor in weights.items() if name in names}


def load_trainable_state(model, optimizer, weights: dict, optimizer_state: dict) -> None:
    """The inverse of trainable_state; every rank passes the full state it read."""
    set_state_dict(
        model,
        optimizer,
        model_state_dict=weights,
        optim_state_dict=optimizer_state,
        options=LOAD_FULL,
    )
