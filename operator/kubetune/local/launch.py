"""Start the trainer on this machine and wait for it: torchrun with one process per local GPU
when there are several, else one process. Its output goes to a log file; a stop request
(Ctrl-C, SIGTERM, SIGHUP) is passed on once, so the trainer saves a checkpoint and exits.

The trainer runs in a session of its own and only ever gets the signal passed on here: in
the terminal's process group torchrun would receive Ctrl-C and pass it on to workers that got
it from the terminal too, and a worker's second SIGINT means "stop at once, no checkpoint".
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubetune.local.files import LocalError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The console script of the training stack: its entry point names the trainer's module, so the
# operator's code needs no import of, nor a string naming, the trainer package (DESIGN.md).
TRAINER_SCRIPT = "kubetune-train"
NEEDS_TRAINER = (
    "local mode needs the training stack: pip install 'kubetune[trainer]' (or make install)"
)


def gpu_count() -> int:
    """Local CUDA GPUs (CUDA_VISIBLE_DEVICES applies). torch is imported only where an NVIDIA
    driver is installed: the import alone takes seconds."""
    if importlib.util.find_spec("torch") is None:
        raise LocalError(NEEDS_TRAINER)
    if not (Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
        return 0
    import torch

    return torch.cuda.device_count()


def trainer_module() -> str:
    """The module `python -m` runs to train: the one behind the kubetune-train console script."""
    scripts = importlib.metadata.entry_points(group="console_scripts", name=TRAINER_SCRIPT)
    entry = next(iter(scripts), None)
    if entry is None or importlib.util.find_spec(entry.module.partition(".")[0]) is None:
        raise LocalError(NEEDS_TRAINER)
    return entry.module


def trainer_command(module: str, config: Path, gpus: int) -> list[str]:
    trainer = ["-m", module, "--config", str(config)]
    if gpus <= 1:
        return [sys.executable, *trainer]
    # --standalone: a rendezvous on a free local port, as one PyTorchJob pod with `gpus` ranks.
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    return [sys.executable, *launcher, *trainer]


def exit_dir(scratch: Path) -> Path:
    """Where each trainer rank records how it ended: {"rank", "code", "message"} per rank."""
    return scratch / "exits"


def exit_message(scratch: Path, code: int) -> str | None:
    """The message a rank recorded with exit `code`: the trainer's one line on a problem
    found before it could write progress.json (a bad part, an unreachable output)."""
    for path in sorted(exit_dir(scratch).glob("rank-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("code") == code and record.get("message"):
            return str(record["message"])
    return None


@dataclass
class Outcome:
    code: int  # the trainer's exit status (negative: killed by that signal)
    signals: list[int] = field(default_factory=list)  # stop requests this process received


def run(
    command: list[str],
    scratch: Path,
    log_path: Path,
    tick: Callable[[], None],
    interval: float = 1.0,
    torchrun: bool = False,
) -> Outcome:
    """Run the trainer with KUBETUNE_SCRATCH=scratch, output to log_path, calling tick() about
    every `interval` seconds until it exits. The first stop request is passed on (torchrun
    gets SIGTERM, which it forwards to every worker once); the second kills the trainer."""
    exits = exit_dir(scratch)
    shutil.rmtree(exits, ignore_errors=True)
    exits.mkdir(parents=True)
    env = {
        **os.environ,
        "KUBETUNE_SCRATCH": str(scratch),
        "KUBETUNE_EXIT_DIR": str(exits),
        "PYTHONUNBUFFERED": "1",
    }
    outcome = Outcome(code=0)
    process: subprocess.Popen | None = None

    def stop(signum, frame):
        outcome.signals.append(signum)
        if process is None or process.poll() is not None:
            return
        if len(outcome.signals) > 1:
            os.killpg(process.pid, signal.SIGKILL)  # asked twice: no checkpoint, now
        elif torchrun or signum == signal.SIGHUP:
            process.send_signal(signal.SIGTERM)
        else:
            process.send_signal(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            if outcome.signals:  # asked to stop while it was starting
                stop(outcome.signals.pop(), None)
            while process.poll() is None:
                tick()
                time.sleep(interval)
            outcome.code = process.returncode
    finally:
        if process is not None and process.poll() is None:  # an exception here: no orphan
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    tick()
    return outcome
