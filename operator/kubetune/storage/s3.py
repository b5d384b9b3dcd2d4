"""s3:// URIs (AWS S3, MinIO, Ceph) through boto3, with multipart transfers and bounded retries."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kubetune.storage.base import Store
from kubetune.storage.errors import (
    NO_SUCH_BUCKET,
    NOT_FOUND,
    StorageError,
    client_reason,
    translated,
)
from kubetune.storage.uri import join_uri, split_s3

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
        with translated("s3://"):
            # A session of its own: boto3's default session is not safe to share across threads.
            session = boto3.session.Session(**given)
            self.client = session.client("s3", config=config, endpoint_url=endpoint)
        self._endpoint, self._transfer = self.client.meta.endpoint_url, transfer

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        bucket, prefix = split_s3(join_uri(uri, ""))
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
        bucket, prefix = split_s3(join_uri(uri, ""))
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
        bucket, key = split_s3(uri)
        try:
            with translated(uri, self._endpoint):
                yield bucket, key
        except StorageError as exc:
            # S3 answers HEAD with a bare 404 when the bucket is missing too: say which.
            if exc.reason == NOT_FOUND and not self._bucket_exists(bucket):
                raise StorageError(uri, NO_SUCH_BUCKET) from None
            raise

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            return client_reason(exc) != NO_SUCH_BUCKET
        except BotoCoreError:
            pass  # cannot tell: the original reason stands
        return True
