"""What `kubetune run --local` shows while the trainer works: what the run is and a progress bar,
from the progress.json the trainer writes to its output URI (as the operator reads it in a
cluster), and the few trainer log lines worth reading (data, model, epochs, resume, warnings),
echoed as they are. Every fact the command acts on comes from progress.json (`latest`), none
from the log's text."""

import os
import re
import sys
from pathlib import Path

from kubetune.api.v1alpha1 import ProgressReport
from kubetune.api.v1alpha1.outputs import PROGRESS, InvalidOutput
from kubetune.storage import StorageError, join_uri, open_store

# The trainer's log format: `2026-01-01 12:00:00,000 INFO [rank 0] message`. Only to choose the
# lines echoed: rank 0's INFO lines that start so, and warnings.
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) \[rank (?P<rank>\d+)\] (?P<message>.*)$")
SHOWN = ("data: ", "model ", "resuming from ", "epoch ", "artifacts: ")
BAR = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps{postfix}"


class Watcher:
    """Call tick() now and then while the trainer runs, close() once it has exited."""

    def __init__(self, output_uri: str, log_path: Path, epochs: int, verbose: bool = False):
        self.store, self.uri = open_store(output_uri), join_uri(output_uri, PROGRESS)
        self.log_path, self.offset, self.partial = log_path, 0, ""
        self.epochs, self.verbose = epochs, verbose
        self.stream = sys.stderr
        self.redraw = redraws(self.stream)
        self.bar = None  # a tqdm bar, once there is progress to draw in a terminal
        self.earlier = self.read_progress()  # an earlier run's: old news until rewritten
        self.latest: ProgressReport | None = None  # this run's, once the trainer wrote one
        self.printed_decile = -1
        self.shown_shape = False

    def tick(self) -> None:
        for line in self.new_log_lines():
            if shown := show(line, self.verbose):
                self.write(shown)
        report = self.read_progress()
        if report is None or report == (self.latest or self.earlier):
            return
        previous, self.latest = self.latest, report
        if not self.shown_shape and (shape := what_trains(report)):  # once, however it ended
            self.shown_shape = True
            self.write(shape)
        if report.state in ("training", "succeeded"):
            self.update(report, previous)

    def close(self) -> None:
        self.tick()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def new_log_lines(self) -> list[str]:
        try:
            with open(self.log_path, errors="replace") as log:
                log.seek(self.offset)
                text = log.read()
                self.offset = log.tell()
        except OSError:
            return []
        # tqdm bars inside the log (weight loading) redraw with \r: keep the last drawing.
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        return [line.rsplit("\r", 1)[-1] for line in lines]

    def read_progress(self) -> ProgressReport | None:
        try:
            if self.store.exists(self.uri):
                return ProgressReport.read(self.store.read_bytes(self.uri), self.uri)
        except (StorageError, InvalidOutput):
            pass  # a storage hiccup or a half-visible file: the next tick reads again
        return None

    def update(self, p: ProgressReport, previous: ProgressReport | None) -> None:
        epoch, step, total, epochs = p.epoch, p.step, p.total_steps or 0, p.epochs or self.epochs
        facts = [f"loss {p.train_loss:.4f}"] if p.train_loss is not None else []
        if p.eval_loss is not None:
            facts.append(f"eval {p.eval_loss:.4f}")
        if p.tokens_per_second:
            facts.append(f"{p.tokens_per_second:,.0f} tok/s")
        facts.append(f"eta {duration(p.eta_seconds)}")
        if not self.redraw:
            # A log file or CI: a line per tenth of the run and per epoch end, not a redraw.
            decile = 10 * step // max(total, 1)
            evaluated = previous is not None and p.eval_loss != previous.eval_loss
            if decile != self.printed_decile or evaluated:
                self.printed_decile = decile
                percent = 100 * step // max(total, 1)
                self.write(
                    f"epoch {epoch}/{epochs}  step {step}/{total} ({percent}%)  " + "  ".join(facts)
                )
            return
        if self.bar is None:
            from tqdm import tqdm  # here: `kubetune operator` imports this module, without tqdm

            self.bar = tqdm(total=total, file=self.stream, bar_format=BAR, dynamic_ncols=True)
        self.bar.total, self.bar.n = total, step
        self.bar.set_description_str(f"epoch {epoch}/{epochs} ", refresh=False)
        self.bar.set_postfix_str(", ".join(facts), refresh=False)
        self.bar.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


def redraws(stream) -> bool:
    """A terminal with a width: a bar redrawn in place. Else (a file, CI) plain lines."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError):
        return False


def show(line: str, verbose: bool) -> str | None:
    """The log line as shown, or None. Errors are left out: the run ends by printing them."""
    match = LOG_LINE.match(line)
    if match is None:
        return line if verbose and line.strip() else None
    level, message = match["level"], match["message"]
    if verbose:
        return line
    if level == "WARNING" and not message.startswith("stopped by "):
        return f"warning: {message}"
    if level == "INFO" and match["rank"] == "0" and message.startswith(SHOWN):
        return message
    return None


def what_trains(p: ProgressReport) -> str | None:
    """The run's shape, once the trainer has loaded data and model; None if it did not say."""
    facts = (p.rows, p.samples, p.world_size, p.epochs, p.total_steps, p.validation_samples)
    if None in facts:
        return None
    return (
        f"training: {p.rows} rows ({p.samples} samples) on {p.world_size} rank(s) x "
        f"{p.epochs} epochs = {p.total_steps} steps; {p.validation_samples} validation samples"
    )


def duration(seconds: float | None) -> str:
    """1:05:09, 5:09 or 0:09; ? when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
