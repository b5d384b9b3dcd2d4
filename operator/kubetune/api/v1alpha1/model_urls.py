"""PresignedModel: what the operator hands a job's pods in place of a hub's credentials (a hub
with `storage.access: presigned`): one presigned GET URL per file of the model's source.

A contract between the operator, which writes it as key URLS_KEY of the job's Secret
(render/model_access.py) and mounts it at MOUNT_DIR, and any trainer image, which finds the
file through the URLS_ENV variable (docs/trainer-config.md). Each URL is a credential for one
object until `expiresAt`: it is never logged, and never leaves that Secret.
"""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from kubetune.api.v1alpha1.base import API_VERSION, ApiObject
from kubetune.api.v1alpha1.common import StorageUri

URLS_KEY = "urls.json"  # the Secret's one key
MOUNT_DIR = "/var/run/secrets/kubetune/model"  # where pods see it, read-only
URLS_ENV = "KUBETUNE_MODEL_URLS"  # MOUNT_DIR/URLS_KEY; unset: the model channel's credentials
SECRET_LIMIT = 1024 * 1024  # bytes: the API server's limit for a Secret's data
# SigV4 presigned URLs live at most 7 days (X-Amz-Expires <= 604800).
MAX_LIFETIME_SECONDS = 7 * 24 * 3600


class PresignedFile(ApiObject):
    """One file of the model folder."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Path relative to the source folder, e.g. config.json."
    )
    size: int = Field(ge=0, description="Bytes, as listed when signed: a download must match.")
    etag: str | None = Field(
        None,
        description="The object's ETag when signed: a download that sees another was changed "
        "since. Without a '-' and without KMS or customer-key encryption it is the MD5 of the "
        "content, which the trainer checks.",
    )
    url: str = Field(repr=False, description="Presigned GET URL: a credential, never logged.")


class PresignedModel(ApiObject):
    """Every file under one model source, each with a presigned GET URL."""

    api_version: Literal["kubetune.io/v1alpha1"] = Field(
        API_VERSION, description="Always kubetune.io/v1alpha1."
    )
    kind: Literal["PresignedModel"] = Field("PresignedModel", description="Always PresignedModel.")
    source: StorageUri = Field(description="The model folder the URLs are for (s3://...).")
    expires_at: str = Field(description="When the URLs stop working (RFC 3339, UTC).")
    files: list[PresignedFile] = Field(min_length=1, description="The files, sorted by key.")
