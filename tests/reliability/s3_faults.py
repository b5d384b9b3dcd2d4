"""A TCP proxy on loopback in front of an S3 server that takes the endpoint away on cue.

The trainer's AWS_ENDPOINT_URL points at the proxy. When the proxy first sees a request line
matching an outage's trigger (`PUT /bucket/out/checkpoints/.../state.json`), it cuts that
request off, resets every open connection and, for the outage's seconds, refuses new ones
("refuse": nothing listens on the port) or accepts and resets them ("reset": a crashed server
behind a load balancer). Then it forwards again. Only the wire changes: the trainer's real boto3
client meets a real outage, and the S3 server behind keeps its objects.
"""

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# A request line can straddle two reads of a connection: keep this much of the last one.
TAIL = 512


@dataclass
class Outage:
    trigger: bytes  # regex over client bytes: rb"PUT /\S*/checkpoints/\S*/state\.json"
    seconds: float
    mode: str = "refuse"  # or "reset"
    started: float | None = None  # time.monotonic() at the trigger
    ended: float | None = None
    request: str = ""  # the request line that triggered it
    turned_away: int = 0  # connections reset ("reset" mode) or cut at the start
    back: float | None = None  # when the first connection after it was let through

    @property
    def active(self) -> bool:
        return self.started is not None and self.ended is None


@dataclass
class OutageProxy:
    upstream: tuple[str, int]
    outages: list[Outage]
    port: int = 0
    _listener: socket.socket | None = None
    _open: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OutageProxy":
        self._listen()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_) -> None:
        self._stopping = True
        with self._lock:
            for sock in list(self._open):
                _reset(sock)
            if self._listener:
                self._listener.close()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # so the accept loop sees outages start and end
        self.port, self._listener = listener.getsockname()[1], listener

    def _accept(self) -> None:
        while not self._stopping:
            self._tick()
            if (outage := self._active()) and outage.mode == "refuse":
                time.sleep(0.05)
                continue
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._relay(client)

    def _tick(self) -> None:
        """End an outage whose time is up; listen again if it had stopped listening."""
        now = time.monotonic()
        for outage in self.outages:
            if outage.active and now - outage.started >= outage.seconds:
                outage.ended = now
                if outage.mode == "refuse":
                    self._listen()

    def _active(self) -> Outage | None:
        return next((o for o in self.outages if o.active), None)

    def _start(self, outage: Outage, request: bytes) -> bool:
        with self._lock:
            if outage.started is not None or self._active():
                return False
            outage.started, outage.request = time.monotonic(), request.decode(errors="replace")
            outage.turned_away += len(self._open) // 2  # two sockets a connection
            for sock in list(self._open):
                _reset(sock)
            if outage.mode == "refuse":
                self._listener.close()  # new connections now get ECONNREFUSED
            return True

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            _reset(client)
            return
        with self._lock:  # an outage begins under this lock too: each connection sees it or not
            if outage := self._active():
                outage.turned_away += 1
                _reset(client)
                _reset(server)
                return
            for ended in self.outages:
                if ended.ended and ended.back is None:
                    ended.back = time.monotonic()
            self._open.update((client, server))
        threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if from_client:
                    seen, tail = tail + data, (tail + data)[-TAIL:]
                    for outage in self.outages:
                        hit = outage.started is None and re.search(outage.trigger, seen)
                        if hit and self._start(outage, hit[0]):
                            return  # this request never reaches the server
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            _reset(source)
            _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees 'connection reset', as from a crash."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv() on it; sends nothing
    except OSError:
        pass
    sock.close()
