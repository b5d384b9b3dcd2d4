"""`early-stopping`: ends training once the eval loss has not improved by more than a
threshold for `patience` evaluations; the best epoch is what gets exported. On by the
hyperparameters early_stopping_patience / early_stopping_threshold (JumpStart's names), or
selected as a callback with its own options."""

from pydantic import Field

from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.registry import Options


class EarlyStoppingOptions(Options):
    patience: int | None = Field(
        None, ge=1, description="Evaluations without improvement; unset: early_stopping_patience."
    )
    threshold: float | None = Field(
        None, ge=0, description="Least improvement that counts; unset: early_stopping_threshold."
    )


class EarlyStopping:
    def __init__(self, patience: int, threshold: float):
        self.patience, self.threshold = patience, threshold
        self.best: float | None = None
        self.waited = 0  # evaluations since the last improvement

    def on_eval(self, recipe, event, control) -> None:
        if self.best is None or event.eval_loss < self.best - self.threshold:
            self.best, self.waited = event.eval_loss, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            control.request_stop(
                f"early stopping: eval loss {event.eval_loss:.4f} has not improved on "
                f"{self.best:.4f} by more than {self.threshold:g} for {self.waited} epoch(s)"
            )

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.waited = state["best"], state["waited"]


def build(options: EarlyStoppingOptions, recipe) -> EarlyStopping:
    hp = recipe.hp
    patience = options.patience or hp.early_stopping_patience
    if patience is None:
        patience = 3  # selected as a callback with no patience anywhere: JumpStart's default
    threshold = hp.early_stopping_threshold if options.threshold is None else options.threshold
    return EarlyStopping(patience, threshold)


CALLBACKS.add(
    CallbackPart(
        name="early-stopping",
        options=EarlyStoppingOptions,
        build=build,
        description="Stop when the eval loss stops improving.",
    )
)
