"""`ddp`: a whole replica of the model on every rank, gradients averaged after each backward."""

from contextlib import nullcontext

from torch.nn.parallel import DistributedDataParallel

from kubetune_trainer.registry import NoOptions
from kubetune_trainer.strategies import STRATEGIES, Strategy


def wrap(model, hp, runtime, options):
    if runtime.world_size == 1:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an optimizer step."""
    if last or not isinstance(model, DistributedDataParallel):
        return nullcontext()
    return model.no_sync()


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


STRATEGIES.add(
    Strategy(
        name="ddp",
        options=NoOptions,
        wrap=wrap,
        no_sync=no_sync,
        unwrap=unwrap,
        description="A replica per rank; the default for several processes.",
    )
)
