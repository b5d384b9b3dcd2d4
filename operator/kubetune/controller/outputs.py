"""What the trainer wrote under a job's output URI: progress.json while it runs, metrics.json
once MANIFEST.json says the artifacts are complete (kubetune.api.v1alpha1.outputs). Read with the
output channel's Secret."""

import functools
import logging
from typing import TypeVar

from kubetune.api.v1alpha1 import ProgressReport, TrainingMetrics
from kubetune.api.v1alpha1.outputs import MANIFEST, METRICS, PROGRESS, InvalidOutput, OutputFile
from kubetune.storage import StorageError, join_uri, open_store

log = logging.getLogger(__name__)
T = TypeVar("T", bound=OutputFile)

# Secret keys (as in the AWS_* variables) -> boto3 Session / client arguments.
SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_DEFAULT_REGION": "region_name",
    "AWS_REGION": "region_name",
    "AWS_ENDPOINT_URL": "endpoint_url",
}


def store_for(uri: str, credentials: dict[str, str] | None):
    """A store for uri, its S3 client shared by every reconcile with the same credentials:
    building a boto3 client costs ~50-100 ms of CPU, more than the reconcile itself."""
    if not uri.startswith("s3://"):
        return open_store(uri, credentials)
    return _s3_store(frozenset((credentials or {}).items()))


@functools.lru_cache(maxsize=64)
def _s3_store(credentials: frozenset):
    return open_store("s3://", dict(credentials) or None)  # boto3 clients are thread-safe


def credentials_from_secret(data: dict[str, str] | None) -> dict[str, str] | None:
    """boto3 arguments from a Secret's AWS_* keys; None: the operator's own identity."""
    if not data:
        return None
    return {SECRET_KEYS[k]: v for k, v in data.items() if k in SECRET_KEYS and v}


def read_outputs(
    uri: str, credentials: dict[str, str] | None
) -> tuple[ProgressReport | None, TrainingMetrics | None]:
    """(progress.json, metrics.json if MANIFEST.json exists); None where not (yet) there, or
    not readable as its type. Storage trouble is logged and reads as "nothing new": status
    keeps its last figures."""
    try:
        store = store_for(uri, credentials)
        progress = _read(store, join_uri(uri, PROGRESS), ProgressReport)
        complete = store.exists(join_uri(uri, MANIFEST))
        metrics = _read(store, join_uri(uri, METRICS), TrainingMetrics) if complete else None
        return progress, metrics
    except StorageError as err:
        log.warning("cannot read the outputs: %s", err)
        return None, None


def _read(store, uri: str, kind: type[T]) -> T | None:
    if not store.exists(uri):
        return None
    try:
        return kind.read(store.read_bytes(uri), uri)
    except InvalidOutput as err:
        log.warning("%s; ignored", err)
        return None
