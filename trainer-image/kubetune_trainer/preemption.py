"""SIGTERM (a preempted pod; torchrun forwards it to every worker) and SIGINT (Ctrl-C in local
mode) ask the loop to stop at the next step boundary, after a checkpoint, rather than die
mid-step and lose the interval. A second Ctrl-C stops at once."""

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint; rerunning resumes from it."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"stopped by {name} at step {self.step}; the checkpoint resumes from there"


class StopRequest:
    signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM/SIGINT only set the returned request."""
    request = StopRequest()

    def handle(signum, frame):
        if request.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        request.signum = signum
        log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
