"""progress.json: what the operator and `kubetune run` show while a job trains.

Written by rank 0 at most every few seconds (a PUT per step would cost more than the step on
small models), and at every epoch end and at the finish.
"""

import json
import time

from kubetune.storage import join_uri
from kubetune_trainer.trainer_status import StatusPusher

INTERVAL_SECONDS = 5.0


class ProgressReporter:
    """Tracks steps, loss, non-padding tokens/s and padding, and writes progress.json now and
    then. Throughput counts only the time spent in training steps (not eval, not saving)."""

    def __init__(
        self,
        store,
        output_uri: str,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        pusher: StatusPusher | None = None,  # also to Kubeflow Trainer's endpoint, if any
    ):
        self.store, self.uri = store, join_uri(output_uri, "progress.json")
        self.pusher = pusher if enabled else None
        self.total_steps, self.start_step, self.enabled = total_steps, start_step, enabled
        self.started = time.monotonic()
        self.last_write = 0.0
        self.tokens = 0  # non-padding tokens of all ranks
        self.padded_tokens = 0  # tokens in the batches as run, padding included
        self.train_seconds = 0.0
        self.state = {
            "epoch": 1,
            "step": start_step,
            "total_steps": total_steps,
            "train_loss": None,
            "eval_loss": None,
            "tokens_per_second": 0.0,
            "eta_seconds": None,
        }

    def step(
        self, epoch: int, step: int, loss: float, tokens: int, padded_tokens: int, seconds: float
    ) -> None:
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.train_seconds += seconds
        self.state.update(epoch=epoch, step=step, train_loss=loss)
        if time.monotonic() - self.last_write >= INTERVAL_SECONDS:
            self.write()

    def epoch_done(self, epoch: int, step: int, eval_loss: float) -> None:
        self.state.update(epoch=epoch, step=step, eval_loss=eval_loss)
        self.write()

    def finished(self, step: int, eval_loss: float) -> None:
        self.state.update(step=step, eval_loss=eval_loss, eta_seconds=0, done=True)
        self.write()
        if self.pusher:
            self.pusher.close()

    def tokens_per_second(self) -> float:
        return self.tokens / max(self.train_seconds, 1e-9)

    def padding_fraction(self) -> float:
        return 1 - self.tokens / max(self.padded_tokens, 1)

    def write(self) -> None:
        elapsed = time.monotonic() - self.started
        step = self.state["step"]
        done, remaining = step - self.start_step, self.total_steps - step
        self.state.update(
            tokens_per_second=round(self.tokens_per_second(), 1),
            eta_seconds=round(elapsed / done * remaining) if done else None,
            percent=round(100 * step / max(self.total_steps, 1)),
        )
        self.last_write = time.monotonic()
        if self.enabled:
            self.store.write_bytes(self.uri, json.dumps(self.state).encode())
        if self.pusher:
            self.pusher.push(self.state)
