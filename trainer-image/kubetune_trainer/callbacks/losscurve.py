"""`loss-curve`: loss_curve.png and loss_curve.csv among the artifacts, from the loss of every
optimizer step (kept in checkpoints, so a resumed run draws the whole run) and each epoch's
eval loss."""

from kubetune_trainer import losscurve
from kubetune_trainer.callbacks import CALLBACKS, CallbackPart, Control, EndEvent, StepEvent
from kubetune_trainer.callbacks.records import epochs_of, job_title
from kubetune_trainer.registry import NoOptions


class LossCurve:
    def __init__(self):
        self.steps: list[list] = []  # [epoch, step, loss] per optimizer step

    def on_step(self, recipe, event: StepEvent, control: Control) -> None:
        # A step redone after a resume from an earlier checkpoint replaces its first try.
        while self.steps and self.steps[-1][1] >= event.step:
            self.steps.pop()
        self.steps.append([event.epoch, event.step, event.loss])

    def on_end(self, recipe, event: EndEvent) -> None:
        if event.artifacts is None or not self.steps:  # only the main rank writes artifacts
            return
        epochs = epochs_of(event.metrics)
        losscurve.write(event.artifacts, self.steps, epochs, job_title(recipe.config))

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [list(step) for step in state.get("steps", [])]


PART = CALLBACKS.add(
    CallbackPart(
        name="loss-curve",
        options=NoOptions,
        build=lambda options, recipe: LossCurve(),
        description="loss_curve.png and loss_curve.csv among the artifacts: train loss per "
        "step, eval loss per epoch, epoch boundaries and the best epoch",
    )
)
