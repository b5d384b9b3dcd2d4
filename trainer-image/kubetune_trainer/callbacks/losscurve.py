"""`loss-curve`: loss_curve.png and loss_curve.csv among the artifacts."""

from kubetune_trainer import losscurve
from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.registry import NoOptions


class LossCurve:
    def __init__(self):
        self.step_losses: list[list] = []  # [epoch, step, loss]

    def on_step(self, recipe, event, control) -> None:
        self.step_losses.append([event.epoch, event.step, event.loss])

    def on_end(self, recipe, event) -> None:
        if event.artifacts is not None and self.step_losses:
            metrics = event.metrics
            epochs = metrics["epochs"] if isinstance(metrics, dict) else metrics.epochs
            epochs = [e if isinstance(e, dict) else e.model_dump() for e in epochs]
            losscurve.write(event.artifacts, self.step_losses, epochs)

    def state_dict(self) -> dict:
        return {"step_losses": self.step_losses}

    def load_state_dict(self, state: dict) -> None:
        self.step_losses = state["step_losses"]


CALLBACKS.add(
    CallbackPart(
        name="loss-curve",
        options=NoOptions,
        build=lambda options, recipe: LossCurve(),
        description="loss_curve.png and .csv among the artifacts (bundled).",
    )
)
