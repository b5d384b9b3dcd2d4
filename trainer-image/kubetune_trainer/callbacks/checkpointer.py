"""`checkpointer`: asks for a checkpoint every checkpoint_interval_steps optimizer steps and at
each epoch end (the recipe writes it: every rank takes part in gathering the state)."""

from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.registry import NoOptions


class Checkpointer:
    def __init__(self, interval: int):
        self.interval = interval  # 0: epoch ends only

    def on_step(self, recipe, event, control) -> None:
        # The last step of an epoch is saved after its evaluation, with the epoch's results.
        if self.interval and event.step % self.interval == 0:
            control.save = control.save or event.epoch_step < event.steps_per_epoch

    def on_eval(self, recipe, event, control) -> None:
        control.save = True


CALLBACKS.add(
    CallbackPart(
        name="checkpointer",
        options=NoOptions,
        build=lambda options, recipe: Checkpointer(recipe.hp.checkpoint_interval_steps),
        description="Checkpoints by checkpoint_interval_steps and at epoch ends (bundled).",
    )
)
