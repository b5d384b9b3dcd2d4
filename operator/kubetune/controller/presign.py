"""Signing a model folder: every file under a hub model's source listed with the hub's
credentials, and one presigned GET URL made for each (SigV4, query-string auth). Nothing else
of the store can be read with them: a URL names one object, one method, and its expiry."""

import datetime
import functools

import boto3
from botocore.config import Config

from kubetune.api.v1alpha1.model_urls import PresignedFile, PresignedModel
from kubetune.storage import CLIENT_CONFIG, StorageError, join_uri, translated

# Query-string SigV4, whatever botocore's default for the region: its 7-day limit is the one
# the config's lifetime is checked against, and every S3-compatible store accepts it.
SIGNING = CLIENT_CONFIG.merge(Config(signature_version="s3v4"))


def sign_model(
    source: str, credentials: dict[str, str] | None, lifetime: int, now: datetime.datetime
) -> PresignedModel:
    """URLs for every file under `source`, valid for `lifetime` seconds from `now` (the
    caller's clock, read just before: the URLs' own clock starts a moment later)."""
    client = _client(frozenset((credentials or {}).items()))
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    prefix = join_uri(prefix, "") if prefix else ""
    files = []
    with translated(source, client.meta.endpoint_url):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) :]
                if not key or key.endswith("/"):  # "folder/" placeholders hold no data
                    continue
                url = client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": obj["Key"]},
                    ExpiresIn=lifetime,
                )
                etag = obj.get("ETag")
                files.append(PresignedFile(key=key, size=obj["Size"], etag=etag, url=url))
    if not files:
        raise StorageError(source, "no files there to sign URLs for")
    expires = now + datetime.timedelta(seconds=lifetime)
    return PresignedModel(
        source=source,
        expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=sorted(files, key=lambda f: f.key),
    )


@functools.lru_cache(maxsize=64)
def _client(credentials: frozenset):
    """One signing client per set of credentials (building one costs ~50-100 ms of CPU)."""
    given = dict(credentials)
    endpoint = given.pop("endpoint_url", None)
    with translated("s3://"):
        session = boto3.session.Session(**given)
        # Without a region botocore signs for us-east-1, which AWS refuses for a bucket
        # elsewhere: give the Secret AWS_REGION (other stores mostly take any region).
        return session.client("s3", config=SIGNING, endpoint_url=endpoint)
