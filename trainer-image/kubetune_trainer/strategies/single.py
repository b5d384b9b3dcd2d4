"""`single`: one process, the model as loaded."""

from contextlib import nullcontext

from kubetune_trainer.registry import NoOptions, PartError
from kubetune_trainer.strategies import STRATEGIES, Strategy


def wrap(model, hp, runtime, options):
    if runtime.world_size > 1:
        raise PartError(
            f"spec.trainer.strategy: single runs one process, this job has {runtime.world_size}; "
            "choose ddp or fsdp2, or leave it unset"
        )
    return model


STRATEGIES.add(
    Strategy(
        name="single",
        options=NoOptions,
        wrap=wrap,
        no_sync=lambda model, last: nullcontext(),
        unwrap=lambda model: model,
        description="One process; the default for a job of one process.",
    )
)
