"""Distributed strategies: how the model is spread over the job's processes. Bundled:
`single` (one process), `ddp` (a replica per rank) and `fsdp2` (each decoder layer sharded over
the ranks); more come from packages with a `kubetune.strategies` entry point. Chosen once, in
`choose`: the job's `spec.trainer.strategy`, else `fsdp2` with enable_fsdp on several
processes, `ddp` on several, `single` on one.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.registry import Chosen, Registry
from kubetune_trainer.runtime import Runtime


@dataclass(frozen=True)
class Strategy:
    name: str
    options: type[BaseModel]
    # (model, hp, runtime, options) -> the model to train, wrapped for this strategy
    wrap: Callable[[Any, Hyperparameters, Runtime, BaseModel], Any]
    # (wrapped model, last micro-batch of the step?) -> context: skip the gradient sync if it can
    no_sync: Callable[[Any, bool], AbstractContextManager]
    # wrapped model -> the model itself, for export on the main rank
    unwrap: Callable[[Any], Any]
    # True: the main rank does not hold whole weights, so export reloads the base model there
    shards_weights: bool = False
    description: str = ""


STRATEGIES = Registry[Strategy]("strategy", "kubetune.strategies")


def choose(
    name: str | None, options: dict | None, hp: Hyperparameters, runtime: Runtime
) -> Chosen[Strategy]:
    """The job's strategy, or the one its hyperparameters and process count call for."""
    if name is None:
        name = "single" if runtime.world_size == 1 else "fsdp2" if hp.enable_fsdp else "ddp"
    return STRATEGIES.choose(name, options, "spec.trainer.strategy")


from kubetune_trainer.strategies import ddp, fsdp, single  # noqa: E402, F401  (bundled parts)
