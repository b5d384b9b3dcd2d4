"""Object storage shared by the operator, the CLI and the trainer: one interface over s3://
(S3, MinIO, Ceph via boto3) and file:// (local mode) URIs, with errors that name the URI and
the reason. Needs boto3 and nothing of the operator's or the trainer's stacks."""

from kubetune.storage.base import COMPLETE_SUFFIX, Store
from kubetune.storage.errors import NOT_FOUND, StorageError, translated
from kubetune.storage.local import LocalStore
from kubetune.storage.s3 import CLIENT_CONFIG, TRANSFER, S3Store
from kubetune.storage.space import NoSpace, free_bytes, room_for
from kubetune.storage.uri import FILE, S3, join_uri


def open_store(uri: str, credentials: dict[str, str] | None = None, **s3_options) -> Store:
    """The store for uri's scheme. `credentials`: a channel's own S3 settings (boto3 Session
    arguments, e.g. the trainer's KUBETUNE_<CHANNEL>_AWS_*); None: boto3's usual chain (AWS_*,
    IRSA, profiles). s3_options (config, transfer: see S3Store) are for tests."""
    if uri.startswith(S3):
        return S3Store(credentials=credentials, **s3_options)
    if uri.startswith(FILE):
        return LocalStore()
    raise StorageError(uri, "unsupported URI: use s3://bucket/prefix or file:///absolute/path")


__all__ = [
    "CLIENT_CONFIG",
    "COMPLETE_SUFFIX",
    "NOT_FOUND",
    "TRANSFER",
    "LocalStore",
    "NoSpace",
    "S3Store",
    "Store",
    "StorageError",
    "free_bytes",
    "join_uri",
    "open_store",
    "room_for",
    "translated",
]
