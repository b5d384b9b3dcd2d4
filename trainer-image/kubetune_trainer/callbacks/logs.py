"""`log`: a line per epoch (and per step at DEBUG) in the trainer's log."""

import logging

from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.registry import NoOptions

log = logging.getLogger("kubetune.train")


class Log:
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_step(self, recipe, event, control) -> None:
        log.debug(
            "step %d/%d (epoch %d): loss %.4f",
            event.step,
            event.total_steps,
            event.epoch,
            event.loss,
        )

    def on_eval(self, recipe, event, control) -> None:
        log.info(
            "epoch %d/%d: train loss %.4f, eval loss %.4f, perplexity %.2f",
            event.epoch,
            self.epochs,
            event.train_loss,
            event.eval_loss,
            event.eval_perplexity,
        )


CALLBACKS.add(
    CallbackPart(
        name="log",
        options=NoOptions,
        build=lambda options, recipe: Log(recipe.hp.epoch),
        description="Epoch results in the log (bundled).",
    )
)
