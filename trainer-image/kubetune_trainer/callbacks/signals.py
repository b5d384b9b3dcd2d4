"""`stop-on-signal`: SIGTERM (preemption) or SIGINT (Ctrl-C) stops the loop at the next step
boundary, after a checkpoint, so a rerun resumes there (exit 128+N, the signal's code)."""

import signal

from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.registry import NoOptions


class StopOnSignal:
    def on_step(self, recipe, event, control) -> None:
        signum = recipe.stop_request.signum
        if signum is not None:
            name = signal.Signals(signum).name
            control.request_stop(f"stopped by {name} at step {event.step}", signal=signum)


CALLBACKS.add(
    CallbackPart(
        name="stop-on-signal",
        options=NoOptions,
        build=lambda options, recipe: StopOnSignal(),
        description="Checkpoint and stop on SIGTERM/SIGINT (bundled, always on).",
    )
)
