"""One control-plane component as a local process: its own process group and log file, readiness
polling that names the component and its last log lines, and a stop that cannot leave it behind."""

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


class ComponentError(RuntimeError):
    """A component did not start: which one, why, and the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # If the test run itself is killed (SIGKILL, a CI timeout), the kernel kills the components
    # too; finalizers and atexit cover every other way out.
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Process:
    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict | None = None,
                 grace: float = 10):
        self.name, self.args, self.env = name, [str(a) for a in args], env
        self.grace = grace  # seconds from SIGTERM to SIGKILL
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the whole process group, SIGKILL after `grace` seconds (its own)."""
        if self.popen is None:
            return
        for sig, wait in ((signal.SIGTERM, self.grace if grace is None else grace),
                          (signal.SIGKILL, 5)):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)  # its own group: start_new_session=True
            except ProcessLookupError:
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue

    def error(self, reason: str, lines: int = 15) -> ComponentError:
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:] \
            if self.log_path.exists() else []
        return ComponentError(f"{self.name} {reason}; last lines of {self.log_path}:\n  "
                              + "\n  ".join(tail))

    def wait_until(self, ready: Callable[[], object], what: str, timeout: float = 60) -> None:
        """Polls `ready()` until it returns true; fails early if the process exits."""
        deadline, last = time.monotonic() + timeout, "never checked"
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.popen.returncode if self.popen else None
                raise self.error(f"exited with code {code} before {what}")
            try:
                if ready():
                    return
                last = "not yet"
            except Exception as exc:  # noqa: BLE001 (any failure means: not ready yet)
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise self.error(f"not {what} after {timeout:.0f} s ({last})")


def http_ok(url: str, ca: Path | None = None, token: str | None = None) -> bool:
    """GET `url`: true on 200. Without `ca`, TLS is not verified (components' self-signed certs)."""
    context = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return response.status == 200
