"""A stand-in for the recipe a callback is given, and a short run of loop events, so callback
tests exercise the real callback code on real files without a model."""

import math
from pathlib import Path
from types import SimpleNamespace

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig
from kubetune.storage import LocalStore, join_uri
from kubetune_trainer.callbacks import (
    CALLBACKS,
    CheckpointEvent,
    Control,
    EndEvent,
    EvalEvent,
    StepEvent,
    walk,
)


def stand_in_recipe(root: Path, *, rank: int = 0, world_size: int = 1, uid: str = "uid-1"):
    """What a callback may rely on: runtime, config, hp, output (a store) and scratch."""
    hp = Hyperparameters(epoch=2, learning_rate=2e-3, lora_r=4)
    config = TrainerConfig.model_validate(
        {
            "job": {"name": "support-bot", "namespace": "team-a", "uid": uid},
            "model": {"modelId": "tiny-llama", "source": f"file://{root}/model/"},
            "data": {"train": f"file://{root}/data/"},
            "hyperparameters": hp.model_dump(),
            "output": {"uri": f"file://{root}/out/"},
        }
    )
    return SimpleNamespace(
        runtime=SimpleNamespace(rank=rank, world_size=world_size, is_main=rank == 0),
        config=config,
        hp=hp,
        output=LocalStore(),
        scratch=root / f"scratch-{uid}-rank{rank}",
    )


def build(name: str, options: dict | None, recipe):
    chosen = CALLBACKS.choose(name, options, "spec.trainer.callbacks[0]")
    return chosen.part.build(chosen.options, recipe)


def loss_at(step: int) -> float:
    return 3 * math.exp(-step / 10) + 1


def step_event(epoch: int, step: int, steps_per_epoch: int, total_steps: int) -> StepEvent:
    return StepEvent(
        epoch=epoch,
        step=step,
        epoch_step=(step - 1) % steps_per_epoch + 1,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        loss=loss_at(step),
        learning_rate=1e-3 * (1 - step / total_steps),
        tokens=1000 + step,
        padded_tokens=1200 + step,
        seconds=0.5,
    )


def eval_loss_at(epoch: int) -> float:
    return 2 + 1 / epoch


def run_events(
    callbacks: list,
    recipe,
    epochs: int = 2,
    steps_per_epoch: int = 5,
    first_epoch: int = 1,
    end: bool = True,
) -> dict:
    """Walk the callbacks through the loop's hooks as the recipe would: steps, a checkpoint
    and an evaluation per epoch, then the end (artifacts in scratch on the main rank).
    Returns the metrics given to on_end."""
    total = epochs * steps_per_epoch
    history = []  # every epoch's: those before first_epoch come from the checkpoint
    for epoch in range(1, epochs + 1):
        step = steps_per_epoch * epoch
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_at(step),
                "eval_loss": eval_loss_at(epoch),
                "eval_perplexity": math.exp(eval_loss_at(epoch)),
            }
        )
        if epoch < first_epoch:
            continue
        for s in range(step - steps_per_epoch + 1, step + 1):
            event = step_event(epoch, s, steps_per_epoch, total)
            walk(callbacks, "on_step", recipe, event, Control())
        uri = join_uri(recipe.config.output.uri, "checkpoints", f"step-{step}")
        walk(callbacks, "on_checkpoint", recipe, CheckpointEvent(step, epoch, uri, "epoch"))
        best = min(history, key=lambda e: e["eval_loss"])["epoch"] == epoch
        done = history[-1]
        event = EvalEvent(
            epoch, step, done["train_loss"], done["eval_loss"], done["eval_perplexity"], best
        )
        walk(callbacks, "on_eval", recipe, event, Control())
    best = min(history, key=lambda e: e["eval_loss"])
    metrics = {
        "best_epoch": best["epoch"],
        "train_loss": best["train_loss"],
        "eval_loss": best["eval_loss"],
        "eval_perplexity": best["eval_perplexity"],
        "tokens_per_second": 2000.0,
        "steps": total,
        "epochs": history,
    }
    if end:
        artifacts = recipe.scratch / "artifacts" if recipe.runtime.is_main else None
        if artifacts is not None:
            artifacts.mkdir(parents=True, exist_ok=True)
        walk(callbacks, "on_end", recipe, EndEvent(metrics, artifacts))
    return metrics
