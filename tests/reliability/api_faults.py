"""Faults in front of the test API server (tests/support/apiserver.py): answers of 500, 409 or
delays for a window of time, on a seeded fraction of the operator's requests.

`FaultGate` is the HTTP handler the server runs: each request passes through it to the emulator
unless a fault window is open, in which case a seeded draw decides, per request, whether it is
answered for the emulator. What a window injects is exactly one of:

    "500"    500 InternalError, and the emulator never sees the request (nothing is written);
    "409"    writes only. PATCH/PUT: 409 Conflict ("the object has been modified"), nothing
             written, as when an optimistic-concurrency check fails. POST: the create is done,
             but answered 409 AlreadyExists, as a client sees it when the answer to its create
             was lost and its retry finds the object (the caller must adopt what is there);
    "delay"  the request waits `delay_s` before the emulator serves it (an overloaded server).

The test's own requests (FineTuneJob creates, reads for assertions) carry EXEMPT_HEADER: never
faulted, never counted.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp.web
import kmock

from tests.support.apiserver import ApiServer, build_emulator
from tests.support.kubeconfig import write_kubeconfig

FaultKind = Literal["500", "409", "delay"]
EXEMPT_HEADER = "X-Kubetune-Test-Client"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@dataclass(frozen=True)
class Seen:
    """One request that reached the gate from the operator: when, what, and what was done."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    query: str
    fault: FaultKind | None

    @property
    def is_watch(self) -> bool:
        return "watch=true" in self.query or "watch=1" in self.query


@dataclass
class Window:
    """A fault on a fraction of the requests `applies` selects, from `opened` to `closed`."""

    kind: FaultKind
    fraction: float
    applies: Callable[[aiohttp.web.BaseRequest], bool]
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None


class FaultGate:
    """The emulator behind a gate (see the module docstring). `log` holds every operator
    request with its arrival time; `injected` counts the faults by kind."""

    def __init__(self, emulator: Any, seed: int, delay_s: float = 2.0) -> None:
        self.emulator, self.delay_s = emulator, delay_s
        self.random = random.Random(seed)
        self.windows: list[Window] = []
        self.log: list[Seen] = []
        self.injected: Counter[str] = Counter()
        self.watches: dict[int, aiohttp.web.BaseRequest] = {}  # streams open now, by id()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emulator, name)  # kmock.Server registers itself in `servers`

    def open(self, kind: FaultKind, fraction: float = 1.0,
             applies: Callable[[aiohttp.web.BaseRequest], bool] = lambda raw: True) -> Window:  # fmt: skip  # noqa: E501
        window = Window(kind, fraction, applies)
        self.windows.append(window)
        return window

    def close(self) -> None:
        for window in self.windows:
            window.closed = window.closed or time.monotonic()

    def cut_watches(self) -> int:
        """Drop every open watch connection, as an API server that goes away does; the
        clients must reconnect (through the gate) and resume."""
        cut = [raw for raw in self.watches.values() if raw.transport is not None]
        for raw in cut:
            raw.transport.close()
        return len(cut)

    @contextlib.asynccontextmanager
    async def fault(self, kind: FaultKind, seconds: float, fraction: float = 1.0,
                    applies: Callable[[aiohttp.web.BaseRequest], bool] = lambda raw: True,
                    ) -> AsyncIterator[Window]:  # fmt: skip
        """A window open for `seconds` (the body runs meanwhile), closed on exit."""
        window = self.open(kind, fraction, applies)
        try:
            yield window
            await asyncio.sleep(max(0.0, window.opened + seconds - time.monotonic()))
        finally:
            window.closed = time.monotonic()

    def _draw(self, raw: aiohttp.web.BaseRequest) -> FaultKind | None:
        for window in self.windows:
            if window.closed is None and window.applies(raw):
                if window.kind == "409" and raw.method not in WRITES:
                    continue
                if self.random.random() < window.fraction:
                    return window.kind
        return None

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.headers.get(EXEMPT_HEADER):
            return await self.emulator(raw)
        fault = self._draw(raw)
        self.log.append(Seen(time.monotonic(), raw.method, raw.path, raw.query_string, fault))
        if fault is not None:
            self.injected[fault] += 1
        if fault == "500":
            return _status(500, "InternalError", "injected: the server had a problem")
        if fault == "409" and raw.method != "POST":
            return _status(409, "Conflict", "injected: the object has been modified; please "
                           "apply your changes to the latest version and try again")  # fmt: skip
        if fault == "delay":
            await asyncio.sleep(self.delay_s)
        if raw.query.get("watch") in ("true", "1"):
            self.watches[id(raw)] = raw
        try:
            response = await self.emulator(raw)
        finally:
            self.watches.pop(id(raw), None)
        if fault == "409" and response.status == 201 and not response.prepared:
            return _status(409, "AlreadyExists", "injected: created, but the answer was lost")
        return response

    def seen(self, since: float = 0.0, until: float = float("inf")) -> list[Seen]:
        """The operator's requests that arrived in [since, until), watch starts included."""
        return [s for s in self.log if since <= s.at < until]


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip
    return aiohttp.web.json_response(body, status=code)


@contextlib.asynccontextmanager
async def serve_with_faults(workdir: Path, seed: int) -> AsyncIterator[tuple[ApiServer, FaultGate]]:
    """tests.support.apiserver.serve (short request history, as for long runs), with the gate
    in front of the emulator. The ApiServer's own requests are exempt from faults."""
    emulator = build_emulator(short_history=True)
    gate = FaultGate(emulator, seed)
    async with emulator, kmock.Server(gate) as server:
        url = str(server.url).rstrip("/")
        api = ApiServer(emulator, url, write_kubeconfig(workdir / "kubeconfig", url))
        api.session.headers[EXEMPT_HEADER] = "1"
        try:
            yield api, gate
        finally:
            await api.session.close()
            emulator.close_watches()
