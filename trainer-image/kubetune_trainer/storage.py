"""Object storage for the trainer: one interface over s3:// (S3, MinIO, Ceph via boto3) and
file:// (local mode) URIs, with errors that name the URI and the reason."""

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as EndpointError

from kubetune_trainer.scratch import room_for

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Files above 64 MiB move in 32 MiB parts, 8 at a time: a 5 GB safetensors shard is
# 5e9 / 32 MiB = 150 parts (S3 allows 10,000), and 8 parts x 32 MiB = 256 MiB of buffers at most.
MULTIPART_THRESHOLD = 64 * MiB
MULTIPART_CHUNKSIZE = 32 * MiB
TRANSFER = TransferConfig(
    multipart_threshold=MULTIPART_THRESHOLD,
    multipart_chunksize=MULTIPART_CHUNKSIZE,
    max_concurrency=8,
)
# "standard" retries back off exponentially with jitter (up to 1, 2, 4, 8 s): 1 try + 4 retries
# ride out a MinIO restart or S3 throttling, yet a wrong endpoint fails within a minute.
RETRIES = 4
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": RETRIES},  # botocore: retries after the 1st try
    connect_timeout=10,  # seconds
    read_timeout=60,  # seconds without a byte: a stalled connection, not a slow one
)

COMPLETE_SUFFIX = ".kubetune-complete"  # beside dest, so dest holds only the downloaded files
LOCK_SUFFIX = ".kubetune-lock"
PARTIAL_SUFFIX = ".kubetune-partial"
NOT_FOUND = "not found"


class StorageError(Exception):
    """A storage operation failed: `uri` says where, `reason` says why, in words. `transient`:
    the endpoint was unreachable or busy, so the same call may succeed later (outages.py)."""

    def __init__(self, uri: str, reason: str, transient: bool = False):
        super().__init__(uri, reason, transient)  # all in args, so the error survives pickling
        self.uri, self.reason, self.transient = uri, reason, transient

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}"


def open_store(uri: str, credentials: dict[str, str] | None = None, **s3_options) -> "Store":
    """The store for uri's scheme. `credentials`: a channel's own S3 settings (Runtime reads
    them from KUBETUNE_<CHANNEL>_AWS_*); None: boto3's usual chain (AWS_*, IRSA, profiles).
    s3_options (config, transfer: see S3Store) are for tests."""
    if uri.startswith("s3://"):
        return S3Store(credentials=credentials, **s3_options)
    if uri.startswith("file://"):
        return LocalStore()
    raise StorageError(uri, "unsupported URI: use s3://bucket/prefix or file:///absolute/path")


def join_uri(base: str, *parts: str) -> str:
    """base/part/...: `join_uri("s3://b/out", "checkpoints", "step-100")`."""
    return (base if base.endswith("/") else base + "/") + "/".join(parts)


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
        with _translated(uri), _locked(dest.with_name(dest.name + LOCK_SUFFIX)):
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
            _write_atomic(marker, json.dumps({"source": uri, "files": listing}).encode())
            seconds = time.monotonic() - started
            log.info("%s: %d files downloaded in %.1f s", uri, len(sources), seconds)
            return [dest / key for _, key, _ in sources]


class S3Store(Store):
    """s3:// URIs through one boto3 client (`client`, for anything this class lacks). boto3 reads
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY itself: MinIO and Ceph need no code.
    """

    def __init__(
        self,
        config: Config = CLIENT_CONFIG,
        transfer: TransferConfig = TRANSFER,
        credentials: dict[str, str] | None = None,
    ):
        given = dict(credentials or {})
        endpoint = given.pop("endpoint_url", None)
        with _translated("s3://"):
            # A session of its own: boto3's default session is not safe to share across threads.
            session = boto3.session.Session(**given)
            self.client = session.client("s3", config=config, endpoint_url=endpoint)
        self._endpoint, self._transfer = self.client.meta.endpoint_url, transfer

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        bucket, prefix = _split_s3(join_uri(uri, ""))
        files = []
        with self._call(uri):
            # A page holds at most 1000 keys; model and data folders may hold more.
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(prefix) :]
                    if key and not key.endswith("/"):  # "folder/" placeholders hold no data
                        files.append((key, obj["Size"]))
        return sorted(files)

    def stat(self, uri: str) -> int | None:
        try:
            with self._call(uri) as (bucket, key):
                return self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except StorageError as exc:
            if exc.reason == NOT_FOUND:
                return None
            raise

    def download_file(self, uri: str, dest: Path) -> Path:
        with self._call(uri) as (bucket, key):
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            # boto3 writes to a temporary name and renames, so dest is never half-written.
            self.client.download_file(bucket, key, str(dest), Config=self._transfer)
        return Path(dest)

    def upload_file(self, path: Path, uri: str) -> str:
        with self._call(uri) as (bucket, key):
            self.client.upload_file(str(path), bucket, key, Config=self._transfer)
        return uri

    def read_bytes(self, uri: str) -> bytes:
        with self._call(uri) as (bucket, key):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self._call(uri) as (bucket, key):  # one PUT: S3 replaces an object atomically
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def delete_prefix(self, uri: str) -> int:
        bucket, prefix = _split_s3(join_uri(uri, ""))
        if not prefix:
            raise StorageError(uri, "refusing to delete a whole bucket")
        files = self.list_files(uri)
        with self._call(uri):
            for start in range(0, len(files), 1000):  # DeleteObjects takes 1000 keys at most
                batch = [{"Key": prefix + key} for key, _ in files[start : start + 1000]]
                done = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch})
                for error in done.get("Errors", []):
                    raise StorageError(f"s3://{bucket}/{error['Key']}", error["Code"])
        return len(files)

    @contextmanager
    def _call(self, uri: str) -> Iterator[tuple[str, str]]:
        """(bucket, key) of uri, with failures turned into StorageError."""
        bucket, key = _split_s3(uri)
        try:
            with _translated(uri, self._endpoint):
                yield bucket, key
        except StorageError as exc:
            # S3 answers HEAD with a bare 404 when the bucket is missing too: say which.
            if exc.reason == NOT_FOUND and not self._bucket_exists(bucket):
                raise StorageError(uri, "no such bucket") from None
            raise

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            return _client_reason(exc) != "no such bucket"
        except BotoCoreError:
            pass  # cannot tell: the original reason stands
        return True


class LocalStore(Store):
    """file:///absolute/path URIs, for local mode."""

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        root = _local_path(uri)
        with _translated(uri):
            files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
            return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in files)

    def stat(self, uri: str) -> int | None:
        path = _local_path(uri)
        with _translated(uri):
            return path.stat().st_size if path.is_file() else None

    def download_file(self, uri: str, dest: Path) -> Path:
        with _translated(uri), _atomic(Path(dest)) as tmp:
            shutil.copyfile(_local_path(uri), tmp)
        return Path(dest)

    def upload_file(self, path: Path, uri: str) -> str:
        with _translated(uri), _atomic(_local_path(uri)) as tmp:
            shutil.copyfile(path, tmp)
        return uri

    def read_bytes(self, uri: str) -> bytes:
        with _translated(uri):
            return _local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with _translated(uri):
            _write_atomic(_local_path(uri), data)

    def delete_prefix(self, uri: str) -> int:
        path = _local_path(uri)
        if path == path.parent:
            raise StorageError(uri, "refusing to delete the root folder")
        count = len(self.list_files(uri))
        with _translated(uri):
            if path.is_dir():
                shutil.rmtree(path)
        return count


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise StorageError(uri, "not an s3://bucket/prefix URI")
    return bucket, key


def _local_path(uri: str) -> Path:
    if not uri.startswith("file:///"):
        raise StorageError(uri, "not a local URI: use file:///absolute/path")
    return Path(uri.removeprefix("file://"))


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
def _atomic(dest: Path) -> Iterator[Path]:
    """A temporary path beside dest that replaces dest only once fully written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)  # atomic within one filesystem
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    with _atomic(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def _translated(uri: str, endpoint: str | None = None) -> Iterator[None]:
    """Turn boto3, botocore and OS exceptions into a StorageError whose message is all a user
    reads: a reason in words, no traceback (`from None`), no secret."""
    try:
        yield
    except StorageError:
        raise
    except (EndpointError, HTTPClientError, IncompleteReadError, RetriesExceededError) as exc:
        # HTTPClientError: a connection reset or closed mid-request; RetriesExceededError: a
        # download that kept breaking off.
        where = endpoint or "the default AWS endpoint"
        reason = f"endpoint unreachable: {where} ({type(exc).__name__})"
        raise StorageError(uri, reason, transient=True) from None
    except NoCredentialsError:
        reason = "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        raise StorageError(uri, reason) from None
    except S3UploadFailedError as exc:  # boto3 flattened the ClientError into text: dig it out
        cause = exc.__context__
        if isinstance(cause, ClientError):
            raise StorageError(uri, _redact(_client_reason(cause)), _busy(cause)) from None
        raise StorageError(uri, _redact(str(exc))) from None
    except ClientError as exc:
        raise StorageError(uri, _redact(_client_reason(exc)), _busy(exc)) from None
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(uri, _redact(f"{type(exc).__name__}: {exc}")) from None
    except OSError as exc:
        raise StorageError(uri, _os_reason(exc, uri)) from None


def _client_reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), error.get("Message", "")
    if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
        return "no such bucket"
    if code in ("404", "NoSuchKey", "NotFound"):
        return NOT_FOUND
    if code in ("403", "AccessDenied", "AllAccessDisabled"):
        return "access denied: check the credentials and the bucket policy"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return f"credentials rejected ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    return f"{code}: {message}" if message else code


def _busy(exc: ClientError) -> bool:
    """A 5xx or throttling answer (after botocore's own retries): there, but not serving now."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")


def _os_reason(exc: OSError, uri: str) -> str:
    reason = NOT_FOUND if exc.errno == errno.ENOENT else (exc.strerror or type(exc).__name__)
    # Name the local file when uri does not (a full disk under the download folder, say).
    if exc.filename and str(exc.filename) != uri.removeprefix("file://"):
        reason += f" ({exc.filename})"
    return reason


def _redact(text: str) -> str:
    """Server and botocore messages should never echo a secret; make sure they cannot."""
    secrets = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")  # also KUBETUNE_<CHANNEL>_AWS_*
    for name, value in os.environ.items():
        if name.endswith(secrets) and value:
            text = text.replace(value, "***")
    return text
