"""progress.json (kubetune.api.v1alpha1.ProgressReport): what the operator and `kubetune run` show
while a job trains, and how the run ended.

Written by rank 0 at most every few seconds (a PUT per step would cost more than the step on
small models), once training starts, at every epoch end and at the finish; `starting` and
`record_outcome` write the state at either end of a start of the trainer.
"""

import datetime
import logging
import signal
import time

from kubetune.api.v1alpha1 import OwnerRecord, ProgressReport, TrainerConfig
from kubetune.api.v1alpha1.outputs import OWNER, PROGRESS, InvalidOutput, State
from kubetune.storage import StorageError, join_uri, open_store
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.trainer_status import StatusPusher

log = logging.getLogger(__name__)

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
        **facts: int,  # what the run is: epochs, rows, samples, validation_samples, world_size
    ):
        self.store, self.uri = store, join_uri(output_uri, PROGRESS)
        self.pusher = pusher if enabled else None
        self.total_steps, self.start_step, self.enabled = total_steps, start_step, enabled
        self.started = time.monotonic()
        self.tokens = 0  # non-padding tokens of all ranks
        self.padded_tokens = 0  # tokens in the batches as run, padding included
        self.train_seconds = 0.0
        self.report = ProgressReport(
            state="training", step=start_step, total_steps=total_steps, **facts
        )
        self.write()  # training has begun: what it is, before the first step's figures
        self.last_write = 0.0  # and the first step is written at once too

    def step(
        self, epoch: int, step: int, loss: float, tokens: int, padded_tokens: int, seconds: float
    ) -> None:
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.train_seconds += seconds
        self.update(epoch=epoch, step=step, train_loss=loss)
        if time.monotonic() - self.last_write >= INTERVAL_SECONDS:
            self.write()

    def epoch_done(self, epoch: int, step: int, eval_loss: float) -> None:
        self.update(epoch=epoch, step=step, eval_loss=eval_loss)
        self.write()

    def finished(self, step: int, eval_loss: float) -> None:
        self.update(state="succeeded", step=step, eval_loss=eval_loss)
        self.write()
        if self.pusher:
            self.pusher.close()

    def tokens_per_second(self) -> float:
        return self.tokens / max(self.train_seconds, 1e-9)

    def padding_fraction(self) -> float:
        return 1 - self.tokens / max(self.padded_tokens, 1)

    def update(self, **fields) -> None:
        self.report = self.report.model_copy(update=fields)

    def write(self) -> None:
        elapsed = time.monotonic() - self.started
        step = self.report.step
        done, remaining = step - self.start_step, self.total_steps - step
        self.update(
            tokens_per_second=round(self.tokens_per_second(), 1),
            eta_seconds=round(elapsed / done * remaining) if done else None,
            percent=round(100 * step / max(self.total_steps, 1)),
        )
        self.last_write = time.monotonic()
        if self.enabled:
            put(self.store, self.uri, self.report)
        if self.pusher:
            self.pusher.push(self.report)


# What a start learns once data and model are loaded, and how it ended: not an earlier start's.
OF_ONE_START = ("epochs", "rows", "samples", "validation_samples", "world_size", "stop_signal",
                "message")  # fmt: skip


def starting(store, output_uri: str) -> None:
    """A start of the trainer has claimed the output (rank 0): state starting. The figures of
    an earlier start (step, losses) stay until this one trains, so status does not fall back
    to zero."""
    uri = join_uri(output_uri, PROGRESS)
    earlier = _read(store, uri) or ProgressReport()
    cleared = dict.fromkeys(OF_ONE_START)
    put(store, uri, earlier.model_copy(update={**cleared, "state": "starting"}))


def record_outcome(
    config: TrainerConfig | None,
    runtime: Runtime,
    state: State,
    message: str,
    signum: int | None = None,
    step: int | None = None,
) -> None:
    """How this run ended, into progress.json (rank 0): failed, or stopped by `signum` at
    `step`. Only where this job owns the output (not before the config is read, nor on another
    job's prefix), and never an error of its own: the run's exit code already tells."""
    if config is None or not runtime.is_main:
        return
    try:
        store = open_store(config.output.uri, runtime.credentials.get("output"))
        owner_uri = join_uri(config.output.uri, OWNER)
        if not store.exists(owner_uri):
            return
        if OwnerRecord.read(store.read_bytes(owner_uri), owner_uri).uid != config.job.uid:
            return
        uri = join_uri(config.output.uri, PROGRESS)
        ended = {"state": state, "message": message}
        if signum is not None:
            ended["stop_signal"] = signal.Signals(signum).name
        if step is not None:
            ended["step"] = step
        put(store, uri, (_read(store, uri) or ProgressReport()).model_copy(update=ended))
    except (StorageError, InvalidOutput) as err:
        log.warning("the outcome (%s) not recorded in %s: %s", state, PROGRESS, err)


def put(store, uri: str, report: ProgressReport) -> None:
    now = datetime.datetime.now(datetime.UTC)
    store.write_bytes(uri, report.model_copy(update={"updated_at": now}).model_dump_json().encode())


def _read(store, uri: str) -> ProgressReport | None:
    if not store.exists(uri):
        return None
    try:
        return ProgressReport.read(store.read_bytes(uri), uri)
    except InvalidOutput:
        return None  # a damaged file: this start writes a new one
