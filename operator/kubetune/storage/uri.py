"""The URIs storage takes: s3://bucket/prefix (S3, MinIO, Ceph) and file:///absolute/path."""

from pathlib import Path

from kubetune.storage.errors import StorageError

S3 = "s3://"
FILE = "file://"


def join_uri(base: str, *parts: str) -> str:
    """base/part/...: `join_uri("s3://b/out", "checkpoints", "step-100")`."""
    return (base if base.endswith("/") else base + "/") + "/".join(parts)


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI."""
    bucket, _, key = uri.removeprefix(S3).partition("/")
    if not uri.startswith(S3) or not bucket:
        raise StorageError(uri, "not an s3://bucket/prefix URI")
    return bucket, key


def local_path(uri: str) -> Path:
    if not uri.startswith(FILE + "/"):
        raise StorageError(uri, "not a local URI: use file:///absolute/path")
    return Path(uri.removeprefix(FILE))
