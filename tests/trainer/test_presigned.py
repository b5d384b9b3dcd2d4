"""The model read through the operator's presigned URLs, against SeaweedFS (which checks the
signatures and the expiry): the same download as for s3://, checked and resumed, and errors
that name the file and never the URL."""

import datetime
import hashlib
import http.client
import json
import logging
import os
import socket
import socketserver
import threading
import time
import uuid
from pathlib import Path

import pytest

from kubetune.api.v1alpha1.model_urls import PresignedModel
from kubetune.controller.presign import sign_model
from kubetune.storage import COMPLETE_SUFFIX, StorageError
from kubetune_trainer.presigned import PART_SUFFIX, PresignedStore
from tests.support.seaweed import HUB_SECRET, seaweed_fixture  # noqa: F401 (fixture)

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": os.urandom(300_000),
    "tokenizer/tokenizer.json": b"{}",
}


@pytest.fixture
def model(seaweed) -> str:
    """A fresh bucket with a model folder, a neighbour folder sharing its name's prefix, and
    an object beside them that no URL may read."""
    s3, bucket = seaweed.client(), f"models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for key, data in FILES.items():
        s3.put_object(Bucket=bucket, Key=f"tiny/{key}", Body=data)
    s3.put_object(Bucket=bucket, Key="tiny-other/secret.bin", Body=b"not yours")
    return f"s3://{bucket}/tiny/"


def signed(seaweed, source: str, lifetime: int = 600, endpoint: str | None = None):
    credentials = {"aws_access_key_id": seaweed.credentials("hub")["AWS_ACCESS_KEY_ID"],
                   "aws_secret_access_key": HUB_SECRET, "region_name": "us-east-1",
                   "endpoint_url": endpoint or seaweed.endpoint}  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    return sign_model(source, credentials, lifetime, now)


def write(path: Path, document: PresignedModel) -> Path:
    path.write_text(document.model_dump_json(by_alias=True))
    return path


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_model_downloads_through_its_urls_once(seaweed, model, tmp_path):
    document = signed(seaweed, model)
    assert [f.key for f in document.files] == sorted(FILES)  # not tiny-other/, a neighbour
    urls = write(tmp_path / "urls.json", document)
    dest = tmp_path / "scratch" / "model"
    assert sorted(PresignedStore(urls).download_dir(model, dest)) == sorted(dest / k for k in FILES)
    assert read_tree(dest) == FILES
    assert not list(dest.rglob(f"*{PART_SUFFIX}"))
    # Complete: reused without reading the URLs again (a second rank, a restarted container).
    urls.write_text("not even JSON")
    PresignedStore(urls).download_dir(model, dest)
    assert dest.with_name("model" + COMPLETE_SUFFIX).exists() and read_tree(dest) == FILES


def test_a_url_names_one_object_only(seaweed, model, tmp_path):
    document = signed(seaweed, model)
    entry = document.files[0]
    bent = entry.url.replace("/tiny/config.json", "/tiny-other/secret.bin")
    other = entry.model_copy(update={"url": bent})
    document = document.model_copy(update={"files": [other]})
    store = PresignedStore(write(tmp_path / "urls.json", document))
    with pytest.raises(StorageError) as err:
        store.download_file(model + entry.key, tmp_path / "out")
    assert "presigned URL refused (SignatureDoesNotMatch" in err.value.reason, err.value
    assert not err.value.transient


def test_an_expired_url_fails_in_one_line_naming_the_file_not_the_url(
    seaweed, model, tmp_path, caplog
):
    document = signed(seaweed, model, lifetime=1)
    caplog.set_level(logging.DEBUG)  # the trainer's side, at its most talkative
    time.sleep(2.5)
    store = PresignedStore(write(tmp_path / "urls.json", document))
    with pytest.raises(StorageError) as err:
        store.download_dir(model, tmp_path / "model")
    said = str(err.value)
    assert said.startswith(f"{model}config.json: presigned URL expired"), said
    assert "\n" not in said and "X-Amz" not in said and "http" not in said
    assert "X-Amz-Signature" not in caplog.text and HUB_SECRET not in caplog.text


def test_a_refreshed_url_is_taken_up_after_an_expired_one(seaweed, model, tmp_path):
    stale, fresh = signed(seaweed, model, lifetime=1), signed(seaweed, model)
    time.sleep(2.5)
    urls = write(tmp_path / "urls.json", stale)

    class Refreshed(PresignedStore):  # the kubelet updates the mounted file mid-download
        reads = 0

        def document(self):
            self.reads += 1
            if self.reads == 2:
                write(urls, fresh)
            return super().document()

    Refreshed(urls).download_dir(model, tmp_path / "model")
    assert read_tree(tmp_path / "model") == FILES


def test_sizes_and_md5_are_checked(seaweed, model, tmp_path):
    document = signed(seaweed, model)
    weights = next(f for f in document.files if f.key == "model.safetensors")
    assert weights.etag.strip('"') == hashlib.md5(FILES["model.safetensors"]).hexdigest()
    wrong = document.model_copy(update={"files": [weights.model_copy(update={"size": 1})]})
    with pytest.raises(StorageError, match="300000 bytes downloaded, 1 listed when signed"):
        PresignedStore(write(tmp_path / "urls.json", wrong)).download_file(
            model + weights.key, tmp_path / "w"
        )
    # A part left by an earlier try resumes from where it stopped (Range, If-Match); what it
    # already held is checked with the rest: a damaged part is caught by the MD5.
    store = PresignedStore(write(tmp_path / "urls.json", document))
    dest = tmp_path / "resumed" / "model.safetensors"
    dest.parent.mkdir()
    part = dest.with_name(dest.name + PART_SUFFIX)
    part.write_bytes(FILES["model.safetensors"][:100_000])
    store.download_file(model + weights.key, dest)
    assert dest.read_bytes() == FILES["model.safetensors"] and not part.exists()
    part.write_bytes(b"x" * 100_000)
    with pytest.raises(StorageError, match="does not match its ETag"):
        store.download_file(model + weights.key, dest)


def test_an_object_changed_since_signing_is_refused(seaweed, model, tmp_path):
    document = signed(seaweed, model)
    bucket = model.removeprefix("s3://").split("/")[0]
    seaweed.client().put_object(Bucket=bucket, Key="tiny/config.json", Body=b'{"other": 1}')
    store = PresignedStore(write(tmp_path / "urls.json", document))
    with pytest.raises(StorageError, match="changed since the operator signed"):
        store.download_file(model + "config.json", tmp_path / "config.json")


def test_a_dropped_connection_resumes_where_it_broke_off(seaweed, model, tmp_path):
    with CuttingProxy(seaweed.endpoint, "/tiny/model.safetensors", cut_after=120_000) as proxy:
        document = signed(seaweed, model, endpoint=proxy.endpoint)
        store = PresignedStore(write(tmp_path / "urls.json", document))
        dest = tmp_path / "model.safetensors"
        store.download_file(model + "model.safetensors", dest)
    assert dest.read_bytes() == FILES["model.safetensors"]
    first, second = proxy.requests[:2]
    assert "range" not in first and second["range"] == f"bytes={proxy.sent[0]}-", proxy.requests
    assert proxy.sent[0] < len(FILES["model.safetensors"])  # it was really cut


def test_a_document_that_is_not_one_says_so_without_echoing_it(tmp_path):
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({"source": "s3://models/x/", "files": "https://h/?X-Amz-Sig=1"}))
    with pytest.raises(StorageError) as err:
        PresignedStore(path).list_files("s3://models/x/")
    assert "not a valid PresignedModel" in str(err.value) and "X-Amz" not in str(err.value)


class CuttingProxy(socketserver.ThreadingTCPServer):
    """Passes requests to `upstream` as they are (Host included: the signature covers it), and
    cuts the body of the first answer for `path` after `cut_after` bytes, as a lost connection
    would. `requests` and `sent`: the headers of, and bytes sent for, each request for `path`."""

    daemon_threads = allow_reuse_address = True

    def __init__(self, upstream: str, path: str, cut_after: int):
        self.upstream, self.path = upstream.removeprefix("http://"), path
        self.cut_after, self.requests, self.sent = cut_after, [], []
        super().__init__(("127.0.0.1", 0), _Relay)
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Relay(socketserver.StreamRequestHandler):
    def handle(self):
        request = self.rfile.readline().decode().split()
        headers = {}
        while (line := self.rfile.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        server: CuttingProxy = self.server
        watched = request[1].split("?")[0].endswith(server.path)
        if watched:
            server.requests.append(headers)
        upstream = http.client.HTTPConnection(server.upstream, timeout=10)
        upstream.request(request[0], request[1], headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        head = [f"HTTP/1.1 {answer.status} {answer.reason}"]
        head += [f"{k}: {v}" for k, v in answer.getheaders() if k.lower() != "connection"]
        self.wfile.write(("\r\n".join([*head, "Connection: close", "", ""])).encode())
        cut = watched and len(server.requests) == 1
        sent = body[: server.cut_after] if cut else body
        self.wfile.write(sent)
        if watched:
            server.sent.append(len(sent))
        self.wfile.flush()
        if cut:
            self.connection.shutdown(socket.SHUT_RDWR)
