"""The model folder read through presigned GET URLs (a hub with storage.access: presigned): the
operator's PresignedModel file, mounted from the job's Secret, names each file's URL, size and
ETag. Store.download_dir does the rest as for s3:// (once per node, reused when complete).

Each URL is a credential: no message, log line or exception here carries one; errors name the
file as s3://bucket/prefix/key. The file is read again before each file (the kubelet updates a
mounted Secret in place when the operator refreshes it), and once more after an expired URL.
"""

import hashlib
import logging
import os
import re
import time
from pathlib import Path

import urllib3
from botocore.httpsession import get_cert_path
from pydantic import ValidationError

from kubetune.api.v1alpha1.model_urls import PresignedFile, PresignedModel
from kubetune.storage import StorageError, Store, join_uri

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
ATTEMPTS = 5  # per file: a dropped connection resumes where it broke off (Range)
TIMEOUT = urllib3.Timeout(connect=10, read=60)  # as the s3:// client: a stall, not slowness
PART_SUFFIX = ".kubetune-part"
MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')  # a plain upload's ETag; multipart ones have '-'


class PresignedStore(Store):
    """A read-only store over the files of one PresignedModel document at `path`."""

    def __init__(self, path: Path, pool: urllib3.PoolManager | None = None):
        self.path = Path(path)
        # urllib3 logs each request's URL at DEBUG: here, that is the signature.
        quiet = logging.getLogger("urllib3.connectionpool")
        quiet.setLevel(max(quiet.getEffectiveLevel(), logging.INFO))
        self.pool = pool or urllib3.PoolManager(
            ca_certs=get_cert_path(True), retries=False, timeout=TIMEOUT
        )

    def document(self) -> PresignedModel:
        where = f"{self.path} (the job's presigned model URLs)"
        try:
            return PresignedModel.model_validate_json(self.path.read_bytes())
        except OSError as err:
            raise StorageError(where, f"cannot read it: {err.strerror}") from None
        except ValidationError as err:
            # pydantic's messages echo input values: the URLs. Field paths and rules only.
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise StorageError(where, f"not a valid PresignedModel: {said}") from None

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        return [(f.key, f.size) for f in self._for(uri).files]

    def stat(self, uri: str) -> int | None:
        found = self._file(uri)
        return None if found is None else found.size

    def download_file(self, uri: str, dest: Path) -> Path:
        entry = self._file(uri)
        if entry is None:
            raise StorageError(uri, "not among the files the operator signed URLs for")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        try:
            self._fetch(uri, entry, part)
        except StorageError as err:
            if "expired" not in err.reason:
                raise
            renewed = self._file(uri)  # refreshed by the operator since the file was read?
            if renewed is None or renewed.url == entry.url:
                raise
            log.info("%s: the URL had expired; the operator's refreshed one is used", uri)
            self._fetch(uri, renewed, part)
        os.replace(part, dest)
        return dest

    def upload_file(self, path: Path, uri: str) -> str:
        raise _read_only(uri)

    def read_bytes(self, uri: str) -> bytes:
        raise _read_only(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        raise _read_only(uri)

    def delete_prefix(self, uri: str) -> int:
        raise _read_only(uri)

    # -- one file --------------------------------------------------------------------------

    def _fetch(self, uri: str, entry: PresignedFile, part: Path) -> None:
        """entry's object into `part`, resumed from what `part` holds (Range, If-Match), then
        checked: size, ETag, and MD5 where the ETag is one."""
        etag, md5_ok = (entry.etag or "").strip(), True
        for attempt in range(ATTEMPTS):
            have = part.stat().st_size if part.exists() and etag else 0
            headers = {"If-Match": etag} if etag else {}
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                response = self.pool.request(
                    "GET", entry.url, headers=headers, preload_content=False, redirect=False
                )
            except urllib3.exceptions.HTTPError as err:
                self._broken(uri, attempt, type(err).__name__)
                continue
            try:
                if response.status == 416 and have == entry.size:
                    break  # the part holds all of it already
                if response.status not in (200, 206):
                    raise StorageError(uri, refused(response), transient=response.status >= 500)
                mode = "ab" if response.status == 206 else "wb"  # 200: the whole object again
                with open(part, mode) as out:
                    # read1: what arrived, written as it comes (stream() holds back up to a
                    # chunk, lost when the connection breaks).
                    while chunk := response.read1(CHUNK):
                        out.write(chunk)
                md5_ok = etag_is_md5(response.headers)
                break
            except urllib3.exceptions.HTTPError as err:
                self._broken(uri, attempt, type(err).__name__)
            except OSError as err:
                raise StorageError(uri, f"writing {part}: {err.strerror}") from None
            finally:
                response.release_conn()
        else:
            raise StorageError(uri, f"the download kept breaking off ({ATTEMPTS} tries)", True)
        size = part.stat().st_size
        if size != entry.size:
            part.unlink(missing_ok=True)
            raise StorageError(uri, f"{size} bytes downloaded, {entry.size} listed when signed")
        digest = MD5_ETAG.match(etag)
        if digest and md5_ok and _md5(part) != digest[1]:
            part.unlink(missing_ok=True)
            raise StorageError(uri, "content does not match its ETag (MD5): corrupted on the way")

    def _broken(self, uri: str, attempt: int, what: str) -> None:
        if attempt + 1 < ATTEMPTS:
            log.warning("%s: connection broke off (%s); resuming", uri, what)
            time.sleep(min(2**attempt, 8))

    def _for(self, uri: str) -> PresignedModel:
        document = self.document()
        if join_uri(document.source, "") != join_uri(uri, ""):
            raise StorageError(uri, f"the presigned URLs are for {document.source}, not this")
        return document

    def _file(self, uri: str) -> PresignedFile | None:
        document = self.document()
        base = join_uri(document.source, "")
        key = uri.removeprefix(base) if uri.startswith(base) else None
        return next((f for f in document.files if f.key == key), None)


def refused(response) -> str:
    """The store's answer in words: its error Code and Message, never the body (S3 echoes the
    string to sign and the signature there)."""
    body = response.read(64 * 1024).decode(errors="replace")
    code = _tag(body, "Code") or str(response.status)
    message = _tag(body, "Message")
    if response.status == 403 and "expired" in (message or "").lower():
        return (
            f"presigned URL expired ({code}: {message}): the operator signs them again while "
            "the job runs; check it runs, and the job's ModelAccess condition"
        )
    if response.status == 412:
        return "the object changed since the operator signed its URL (ETag differs)"
    if response.status == 404:
        return "not found: removed from the model store since the operator listed it"
    if response.status == 403:
        return (
            f"presigned URL refused ({code}{': ' + message if message else ''}): the hub's "
            "credentials changed or lost access, or the job's access was revoked"
        )
    return f"HTTP {response.status} {code}{': ' + message if message else ''}"


def etag_is_md5(headers) -> bool:
    """S3's ETag is the content's MD5 for plain and SSE-S3 objects, not for SSE-KMS or SSE-C."""
    if "x-amz-server-side-encryption-customer-algorithm" in headers:
        return False
    return headers.get("x-amz-server-side-encryption", "AES256") == "AES256"


def _tag(body: str, name: str) -> str | None:
    found = re.search(f"<{name}>([^<]{{0,300}})</{name}>", body)
    return found[1].strip() if found else None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_only(uri: str) -> StorageError:
    return StorageError(uri, "the model's presigned URLs are read-only")
