"""What every store offers, and the once-per-node folder download built on it."""

import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubetune.storage.errors import StorageError, translated
from kubetune.storage.space import room_for
from kubetune.storage.uri import join_uri

log = logging.getLogger(__name__)

COMPLETE_SUFFIX = ".kubetune-complete"  # beside dest, so dest holds only the downloaded files
LOCK_SUFFIX = ".kubetune-lock"
PARTIAL_SUFFIX = ".kubetune-partial"


class Store:
    """What both schemes offer; folder URIs may end with '/' or not. Each scheme implements

    list_files(uri) -> [(key relative to the folder, size)]   every file under a folder, sorted
    stat(uri) -> int | None                  size of the file at uri, None if there is none
    download_file(uri, dest) -> Path         one file, parents created, dest replaced atomically
    upload_file(path, uri) -> str            one local file; returns uri
    read_bytes(uri) -> bytes                 a small file such as progress.json
    write_bytes(uri, data)                   replaced atomically: readers never see half of it
    delete_prefix(uri) -> int                every file under a folder (an old checkpoint)
    """

    def exists(self, uri: str) -> bool:
        return self.stat(uri) is not None

    def upload_dir(self, path: Path, uri: str) -> list[str]:
        """Copy every file under the local folder path to the folder uri; returns their URIs."""
        if not Path(path).is_dir():
            raise StorageError(str(path), "no such local folder")
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        return [self.upload_file(p, join_uri(uri, p.relative_to(path).as_posix())) for p in files]

    def download_dir(self, uri: str, dest: Path) -> list[Path]:
        """Make dest a copy of the folder uri (or of the one file it names), once per node.

        Every local rank may call it at once: one downloads, the others wait and reuse it.
        A completed download is reused without contacting storage; a crashed one is redone.
        dest is replaced as a whole, so it holds exactly the files listed, nothing stale.
        """
        dest = Path(dest)
        marker, partial = (dest.with_name(dest.name + s) for s in (COMPLETE_SUFFIX, PARTIAL_SUFFIX))
        with translated(uri), _locked(dest.with_name(dest.name + LOCK_SUFFIX)):
            done = _completed_files(marker, uri, dest)
            if done is not None:
                log.info("%s: already downloaded to %s", uri, dest)
                return done
            marker.unlink(missing_ok=True)
            started = time.monotonic()
            sources = [(join_uri(uri, key), key, size) for key, size in self.list_files(uri)]
            if not sources:  # a data channel may name one file rather than a folder
                if (size := self.stat(uri)) is None:
                    raise StorageError(uri, "not found: no file there, and no files under it")
                sources = [(uri, uri.rstrip("/").rsplit("/", 1)[-1], size)]
            for source, key, _ in sources:  # all checked before the first byte is written
                _check_key(source, key)
            shutil.rmtree(partial, ignore_errors=True)  # what a crashed try left behind
            needed = sum(size for _, _, size in sources)
            with room_for(partial, f"the download of {uri}", needed):
                for source, key, _ in sources:
                    self.download_file(source, partial / key)
            if dest.exists():
                shutil.rmtree(dest)
            partial.rename(dest)
            # Written last: its presence alone says dest is complete.
            listing = [[key, size] for _, key, size in sources]
            write_atomic(marker, json.dumps({"source": uri, "files": listing}).encode())
            seconds = time.monotonic() - started
            log.info("%s: %d files downloaded in %.1f s", uri, len(sources), seconds)
            return [dest / key for _, key, _ in sources]


def _check_key(uri: str, key: str) -> None:
    """Refuse keys that would land outside the download folder ('../x', '/x', 'a\\..\\x')."""
    if "\\" in key or "\0" in key or any(s in ("", ".", "..") for s in key.split("/")):
        raise StorageError(
            uri,
            f"refusing object key {key!r}: an absolute path, an empty, '.' or '..' segment or a "
            "backslash could write outside the download folder",
        )


def _completed_files(marker: Path, uri: str, dest: Path) -> list[Path] | None:
    """The files of a completed download of uri into dest; None if it must be (re)done."""
    try:
        done = json.loads(marker.read_text())
        files = [(dest / key, size) for key, size in done["files"]]
        if done["source"] == uri and all(p.stat().st_size == size for p, size in files):
            return [path for path, _ in files]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no marker, a damaged one, or a file removed since: download again
    return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path: local ranks queue here; the kernel drops the lock
    if its holder dies, so a crashed download never blocks the next try."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def atomic(dest: Path) -> Iterator[Path]:
    """A temporary path beside dest that replaces dest only once fully written. It is created
    with the mode a plain `cp` gives (0666 less the umask: 0644 usually), not mkstemp's 0600:
    os.replace keeps the temporary file's mode, and artifacts must be readable by others."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file_beside(dest)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)  # atomic within one filesystem
    finally:
        Path(tmp).unlink(missing_ok=True)


def _new_file_beside(dest: Path) -> str:
    """An empty file of a fresh random name in dest's folder, created exclusively."""
    for _ in range(100):
        path = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"{dest.parent}: no free temporary name for {dest.name}")


def write_atomic(path: Path, data: bytes) -> None:
    with atomic(path) as tmp:
        tmp.write_bytes(data)
