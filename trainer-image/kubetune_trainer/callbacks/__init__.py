"""Callbacks: plain objects the loop walks at each step, evaluation, checkpoint and the end.

Every method is optional; a callback defines only the ones it needs:
    on_step(recipe, event: StepEvent, control: Control)
    on_eval(recipe, event: EvalEvent, control: Control)
    on_checkpoint(recipe, event: CheckpointEvent)
    on_end(recipe, event: EndEvent)
    state_dict() -> dict / load_state_dict(state)   # kept in checkpoints, restored on resume
Every rank walks the same callbacks in the same order; `recipe.runtime.is_main` says whether
this rank is the one that writes. A callback asks the loop to save or stop through `control`;
the loop honours a request made on any rank on all ranks.

A part is registered as a `CallbackPart(name, options, build)`, where `build(options, recipe)`
returns the callback object.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubetune_trainer.registry import Registry

CALLBACKS = Registry["CallbackPart"]("callback", "kubetune.callbacks")


@dataclass(frozen=True)
class CallbackPart:
    name: str
    options: type[BaseModel]
    build: Callable[[BaseModel, Any], object]  # (options, recipe) -> callback
    description: str = ""


@dataclass(frozen=True)
class StepEvent:
    """One optimizer step done; counts are of all ranks."""

    epoch: int
    step: int  # optimizer steps done since the run began
    epoch_step: int  # of this epoch
    steps_per_epoch: int
    total_steps: int
    loss: float  # mean over the step's label tokens
    learning_rate: float
    tokens: int  # non-padding tokens
    padded_tokens: int  # tokens as run, padding included
    seconds: float  # wall time of the step


@dataclass(frozen=True)
class EvalEvent:
    """An epoch ended and was evaluated on the validation set."""

    epoch: int
    step: int
    train_loss: float  # mean step loss of the epoch
    eval_loss: float
    eval_perplexity: float
    best: bool  # the best epoch so far (lowest eval loss)


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    epoch: int
    uri: str  # OUTPUT/checkpoints/step-N/
    reason: str  # "interval", "epoch" or "stop"


@dataclass(frozen=True)
class EndEvent:
    """Training finished; artifacts are being written. `artifacts` is the staging folder on
    the main rank (files put there are uploaded and listed in MANIFEST.json), None elsewhere."""

    metrics: Any  # kubetune.api TrainingMetrics
    artifacts: Path | None


@dataclass
class Control:
    """What callbacks ask of the loop after the current step or evaluation."""

    save: bool = False  # write a checkpoint now
    stop: str | None = None  # end training: the reason, e.g. "early stopping: ..."
    signal: int | None = None  # the stop comes from this signal: exit 128+N, rerun resumes
    notes: list[str] = field(default_factory=list)

    def request_stop(self, reason: str, signal: int | None = None) -> None:
        self.stop = self.stop or reason
        self.signal = self.signal or signal
        self.save = self.save or signal is not None  # a signal stop resumes from a checkpoint


def walk(callbacks: list, hook: str, *args) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


# The bundled parts add themselves to CALLBACKS; each imports its library (matplotlib,
# tensorboardX, mlflow) only when a job selects it.
from kubetune_trainer.callbacks import (  # noqa: E402, F401
    checkpointer,
    early_stopping,
    logs,
    losscurve,
    mlflow,
    progress,
    signals,
    tensorboard,
)
