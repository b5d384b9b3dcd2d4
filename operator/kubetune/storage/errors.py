"""StorageError, and `translated`: boto3, botocore and OS exceptions turned into one line a user
can act on (the URI, a reason in words, whether a retry may help), never a secret."""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as EndpointError

NOT_FOUND = "not found"
NO_SUCH_BUCKET = "no such bucket"


class StorageError(Exception):
    """A storage operation failed: `uri` says where, `reason` says why, in words. `transient`:
    the endpoint was unreachable or busy, so the same call may succeed later (the trainer's
    outages.py retries those)."""

    def __init__(self, uri: str, reason: str, transient: bool = False):
        super().__init__(uri, reason, transient)  # all in args, so the error survives pickling
        self.uri, self.reason, self.transient = uri, reason, transient

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}"


@contextmanager
def translated(uri: str, endpoint: str | None = None) -> Iterator[None]:
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
            raise StorageError(uri, _redact(client_reason(cause)), _busy(cause)) from None
        raise StorageError(uri, _redact(str(exc))) from None
    except ClientError as exc:
        raise StorageError(uri, _redact(client_reason(exc)), _busy(exc)) from None
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(uri, _redact(f"{type(exc).__name__}: {exc}")) from None
    except OSError as exc:
        raise StorageError(uri, _os_reason(exc, uri)) from None


def client_reason(exc: ClientError) -> str:
    """An S3 error answer in words."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), error.get("Message", "")
    if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
        return NO_SUCH_BUCKET
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
