"""`kubetune operator` as users run it, in a process of its own, against the test API server:
for the scale bench and the tests where processes matter (peering, SIGKILL)."""

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.apiserver import ApiServer


def free_port() -> int:
    """A TCP port nobody listens on now, for a server a subprocess starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_operator(api: ApiServer, log: Path, *args: str, env: dict | None = None):
    """The operator CLI with ports of its own, its output in `log`; AWS_* from os.environ."""
    command = [sys.executable, "-m", "kubetune.cli.main", "operator",
               "--metrics-port", str(free_port()), "--health-port", str(free_port()), *args]  # fmt: skip  # noqa: E501
    env = {**os.environ, **(env or {}), "KUBECONFIG": str(api.kubeconfig)}
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


async def stop_operator(operator: subprocess.Popen, timeout: float = 30) -> float:
    """SIGTERM, then the seconds it took to exit. Waited for off the event loop: the test server
    in this loop must go on answering while kopf says goodbye."""
    started = asyncio.get_running_loop().time()
    operator.terminate()
    try:
        await asyncio.to_thread(operator.wait, timeout=timeout)
    except subprocess.TimeoutExpired:
        operator.kill()
        raise
    return asyncio.get_running_loop().time() - started
