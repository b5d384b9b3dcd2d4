"""progress.json: what the operator and `kubetune run` show while a job trains.

Written by rank 0 at most every few seconds (a PUT per step would cost more than the step on
small models), and at every epoch end and at the finish.
"""

import json
import time

from kubetune_trainer.storage import join_uri

INTERVAL_SECONDS = 5.0


class ProgressReporter:
    """Tracks steps, loss and non-padding tokens/s, and writes progress.json now and then."""

    def __init__(self, store, output_uri: str, total_steps: int, enabled: bool = True):
        self.store, self.uri = store, join_uri(output_uri, "progress.json")
        self.total_steps, self.enabled = total_steps, enabled
        self.started = time.monotonic()
        self.last_write = 0.0
        self.tokens = 0
        self.epoch_losses: list[float] = []
        self.state = {
            "epoch": 1,
            "step": 0,
            "total_steps": total_steps,
            "train_loss": None,
            "eval_loss": None,
            "tokens_per_second": 0.0,
            "eta_seconds": None,
        }

    def step(self, epoch: int, step: int, loss: float, tokens: int) -> None:
        self.tokens += tokens
        self.epoch_losses.append(loss)
        self.state.update(epoch=epoch, step=step, train_loss=loss)
        if time.monotonic() - self.last_write >= INTERVAL_SECONDS:
            self.write()

    def epoch_train_loss(self) -> float:
        """Mean step loss of the epoch just finished."""
        losses, self.epoch_losses = self.epoch_losses, []
        return sum(losses) / max(len(losses), 1)

    def epoch_done(self, epoch: int, step: int, eval_loss: float) -> None:
        self.state.update(epoch=epoch, step=step, eval_loss=eval_loss)
        self.write()

    def finished(self, step: int, eval_loss: float) -> None:
        self.state.update(step=step, eval_loss=eval_loss, eta_seconds=0, done=True)
        self.write()

    def tokens_per_second(self) -> float:
        return self.tokens / max(time.monotonic() - self.started, 1e-9)

    def write(self) -> None:
        elapsed = time.monotonic() - self.started
        step = self.state["step"]
        remaining = self.total_steps - step
        self.state.update(
            tokens_per_second=round(self.tokens_per_second(), 1),
            eta_seconds=round(elapsed / step * remaining) if step else None,
            percent=round(100 * step / max(self.total_steps, 1)),
        )
        self.last_write = time.monotonic()
        if self.enabled:
            self.store.write_bytes(self.uri, json.dumps(self.state).encode())
