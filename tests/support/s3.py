"""A real S3 endpoint for tests: moto's server on a free local port, spoken to over HTTP.

Import the fixtures into a test module (`from tests.support.s3 import s3_endpoint_fixture,
s3_server_fixture`) and request `s3_endpoint`: AWS_* variables then point boto3 at the server.
"""

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

# Planted as AWS_SECRET_ACCESS_KEY (moto accepts any): it must never show in an error or a log.
SECRET = "canary-secret-123"
ACCESS_KEY_ID = "AKIDKUBETUNETEST"


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[str]:
    """The endpoint URL of a moto S3 server, shared by the session (buckets tell tests apart)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="s3_endpoint")
def s3_endpoint_fixture(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> str:
    """The endpoint URL, with the variables boto3 reads set for this test only."""
    isolated = tmp_path_factory.mktemp("aws")  # no ~/.aws profile may leak in
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated / "credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


def make_bucket(name: str | None = None) -> str:
    """Create a bucket at the endpoint the environment names; a fresh name unless given."""
    name = name or f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def seed_objects(bucket: str, objects: dict[str, bytes]) -> None:
    """Put many objects straight into the in-process moto backend: 1001 PUTs over HTTP take
    about 5 s, this takes milliseconds. Reads then go over HTTP as usual."""
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key, data in objects.items():
        backend.put_object(bucket, key, data)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, with the query string
    status: int


@pytest.fixture(name="s3_requests")
def s3_requests_fixture() -> Iterator[list[Request]]:
    """The requests the moto server answers during the test, read from its access log
    (it runs in this process, so requests from child processes show up too)."""
    requests: list[Request] = []
    line = re.compile(r'"(\w+) (\S+) HTTP/[\d.]+" (\d+)')

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if match := line.search(record.getMessage()):
                requests.append(Request(match[1], unquote(match[2]), int(match[3])))

    logger, handler = logging.getLogger("werkzeug"), Collect(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield requests
    logger.removeHandler(handler)
    logger.setLevel(level)
