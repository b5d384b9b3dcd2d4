"""The trainer's storage rides out an outage: a MinIO restart or an S3 brown-out mid-run must
not throw away hours of training, so once the endpoint has answered, an unreachable or busy
endpoint is retried for minutes. A wrong endpoint still fails fast: it never answered.

Only the trainer wraps its stores so; the operator's handlers must not block for minutes.
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kubetune.storage import StorageError, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# On top of botocore's own retries (about 15 s): 5 minutes covers a storage restart or a
# rescheduled MinIO pod; waits double from 1 s to 5 s, so a recovery is seen within seconds.
OUTAGE_SECONDS = 300.0
FIRST_DELAY, MAX_DELAY = 1.0, 5.0


class Patient(Store):
    """`store`, with each call retried through an outage of up to `seconds`. Every call here is
    idempotent (a PUT, GET, HEAD, listing or delete again), so retrying one is safe; writers
    that need all-or-nothing (a checkpoint, the artifacts) write their manifest last."""

    def __init__(self, store: Store, seconds: float = OUTAGE_SECONDS):
        self.store, self.seconds = store, seconds
        self.answered = False  # has the endpoint ever answered (even with an error)?

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        return self._retrying(self.store.list_files, uri)

    def stat(self, uri: str) -> int | None:
        return self._retrying(self.store.stat, uri)

    def download_file(self, uri: str, dest: Path) -> Path:
        return self._retrying(self.store.download_file, uri, dest)

    def upload_file(self, path: Path, uri: str) -> str:
        return self._retrying(lambda u: self.store.upload_file(path, u), uri)

    def read_bytes(self, uri: str) -> bytes:
        return self._retrying(self.store.read_bytes, uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        return self._retrying(self.store.write_bytes, uri, data)

    def delete_prefix(self, uri: str) -> int:
        return self._retrying(self.store.delete_prefix, uri)

    def _retrying(self, call: Callable[..., T], uri: str, *args) -> T:
        deadline, delay = None, FIRST_DELAY
        while True:
            try:
                result = call(uri, *args)
                self.answered = True
                return result
            except StorageError as exc:
                self.answered = self.answered or not exc.transient
                if not (exc.transient and self.answered):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.seconds
                if now >= deadline:
                    reason = f"{exc.reason}; still failing after {self.seconds:.0f} s of retries"
                    raise StorageError(exc.uri, reason) from None
                wait = min(delay, deadline - now)  # the last try comes at the deadline
                log.warning("%s; retrying in %.0f s, for %.0f s more", exc, wait, deadline - now)
                time.sleep(wait)
                delay = min(2 * delay, MAX_DELAY)
