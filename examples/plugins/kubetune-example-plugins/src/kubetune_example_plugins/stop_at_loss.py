"""`stop-at-loss`: asks the loop to stop once the mean train loss of the last `window` optimizer
steps is under `threshold`. The window is kept in checkpoints, so a resumed run goes on
counting where the interrupted one was."""

import math
from collections import deque

from pydantic import Field

from kubetune_trainer.callbacks import CallbackPart, Control, StepEvent
from kubetune_trainer.registry import Options


class StopAtLossOptions(Options):
    threshold: float = Field(gt=0, description="Stop once the mean train loss is under this.")
    window: int = Field(5, ge=1, description="Optimizer steps the mean is taken over.")


class StopAtLoss:
    def __init__(self, threshold: float, window: int):
        self.threshold, self.window = threshold, window
        self.losses: deque[float] = deque(maxlen=window)  # the last `window` step losses

    def on_step(self, recipe, event: StepEvent, control: Control) -> None:
        # event.loss is the same on every rank (a mean over all ranks' label tokens), so every
        # rank decides the same; the loop would stop them all on any rank's request anyway.
        self.losses.append(event.loss)
        if len(self.losses) < self.window:
            return
        mean = sum(self.losses) / self.window
        if math.isfinite(mean) and mean < self.threshold:
            control.request_stop(
                f"stop-at-loss: mean train loss {mean:.4f} of the last {self.window} steps is "
                f"under {self.threshold:g} (step {event.step})"
            )

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        # A resumed job may have changed `window`: keep the newest losses that fit.
        self.losses = deque(state["losses"], maxlen=self.window)


def build(options: StopAtLossOptions, recipe) -> StopAtLoss:
    return StopAtLoss(options.threshold, options.window)


STOP_AT_LOSS = CallbackPart(
    name="stop-at-loss",
    options=StopAtLossOptions,
    build=build,
    description="Stop once the mean train loss of the last steps is under a threshold.",
)
