"""Storage against a real S3 endpoint (moto over HTTP) and local folders."""

import hashlib
import json
import logging
import multiprocessing
import os
import socket
import time
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.stub import Stubber

from kubetune.storage import (
    COMPLETE_SUFFIX,
    S3Store,
    StorageError,
    join_uri,
    open_store,
)
from kubetune_trainer.runtime import Runtime
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    SECRET,
    make_bucket,
    s3_endpoint_fixture,
    s3_requests_fixture,
    s3_server_fixture,
    seed_objects,
)

MiB = 1024 * 1024

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": os.urandom(200_000),
    "tokenizer/tokenizer.json": b"{}",
    "tokenizer/deeper/special tokens.txt": b"<s> </s>",
    "empty.txt": b"",
}


@pytest.fixture(params=["s3", "file"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A folder URI in an empty store of either scheme."""
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return f"s3://{make_bucket()}/jobs/support-bot"
    return f"file://{tmp_path}/store/jobs/support-bot"


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    return make_bucket()


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def read_tree(folder: Path) -> dict[str, bytes]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def object_gets(requests, bucket: str) -> list[str]:
    """Keys fetched with GET (listings excluded)."""
    prefix = f"/{bucket}/"
    gets = (r.path for r in requests if r.method == "GET")
    return [path.removeprefix(prefix) for path in gets if path.startswith(prefix)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_clean(error: StorageError) -> None:
    """What a user reads: no traceback, no botocore internals, no secret."""
    for text in (str(error), repr(error)):
        assert SECRET not in text
        assert "Traceback" not in text and "botocore" not in text
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_folder_round_trip(root: str, tmp_path: Path):
    store = open_store(root)
    source = write_tree(tmp_path / "source", FILES)

    uploaded = store.upload_dir(source, join_uri(root, "model"))

    assert uploaded == [join_uri(root, "model", name) for name in sorted(FILES)]
    assert store.list_files(join_uri(root, "model") + "/") == sorted(
        (name, len(data)) for name, data in FILES.items()
    )
    dest = tmp_path / "cache" / "model"
    paths = store.download_dir(join_uri(root, "model"), dest)
    assert sorted(paths) == sorted(dest / name for name in FILES)
    assert read_tree(dest) == FILES  # nothing but the files: the marker lies beside dest
    assert json.loads(dest.with_name("model" + COMPLETE_SUFFIX).read_text())["files"] == [
        [name, len(FILES[name])] for name in sorted(FILES)
    ]


def test_small_objects_exists_and_delete_prefix(root: str, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)  # botocore logs every request at DEBUG
    store = open_store(root)
    progress = join_uri(root, "progress.json")
    assert not store.exists(progress)
    store.write_bytes(progress, b'{"step": 1}')
    store.write_bytes(progress, b'{"step": 2}')
    assert store.read_bytes(progress) == b'{"step": 2}'
    assert store.exists(progress) and store.stat(progress) == len(b'{"step": 2}')
    if root.startswith("file://"):  # written through a temporary file, none left behind
        assert os.listdir(root.removeprefix("file://")) == ["progress.json"]

    for step in ("step-1", "step-10"):
        store.upload_dir(write_tree(tmp_path / step, FILES), join_uri(root, "checkpoints", step))
    assert store.delete_prefix(join_uri(root, "checkpoints", "step-1")) == len(FILES)
    assert store.list_files(join_uri(root, "checkpoints", "step-1")) == []
    assert len(store.list_files(join_uri(root, "checkpoints", "step-10"))) == len(FILES)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_local_files_get_the_mode_cp_gives(umask: int, tmp_path: Path):
    """0666 less the umask, not the 0600 of a temporary file: artifacts are read by other
    users and by the pods that serve them."""
    root = f"file://{tmp_path}/out"
    source = write_tree(tmp_path / "source", {"a.bin": b"x" * 100})
    before = os.umask(umask)
    try:
        store = open_store(root)
        store.write_bytes(join_uri(root, "progress.json"), b"{}")
        store.upload_dir(source, join_uri(root, "adapter"))
        store.download_dir(join_uri(root, "adapter"), tmp_path / "copy" / "adapter")
    finally:
        os.umask(before)
    written = [tmp_path / "out" / "progress.json", tmp_path / "out" / "adapter" / "a.bin"]
    written.append(tmp_path / "copy" / "adapter" / "a.bin")
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~umask)}
    folders = [tmp_path / "out", tmp_path / "out" / "adapter", tmp_path / "copy" / "adapter"]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(0o777 & ~umask)}


def test_download_dir_of_a_single_file(root: str, tmp_path: Path):
    store = open_store(root)
    (tmp_path / "train.jsonl").write_bytes(b'{"text": "hi"}\n')
    uri = store.upload_file(tmp_path / "train.jsonl", join_uri(root, "data", "train.jsonl"))

    assert store.download_dir(uri, tmp_path / "train") == [tmp_path / "train" / "train.jsonl"]
    assert (tmp_path / "train" / "train.jsonl").read_bytes() == b'{"text": "hi"}\n'


def test_multipart_round_trip(bucket: str, tmp_path: Path):
    # 5 MiB is the smallest part S3 accepts: 2 full parts and a short third one.
    transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    store = open_store(f"s3://{bucket}", transfer=transfer)
    data = os.urandom(10 * MiB + 123)
    (tmp_path / "shard.safetensors").write_bytes(data)

    uri = store.upload_file(
        tmp_path / "shard.safetensors", f"s3://{bucket}/model/shard.safetensors"
    )
    dest = store.download_file(uri, tmp_path / "back" / "shard.safetensors")

    etag = boto3.client("s3").head_object(Bucket=bucket, Key="model/shard.safetensors")["ETag"]
    assert etag.strip('"').endswith("-3")  # S3's mark of a 3-part upload
    assert sha256(dest.read_bytes()) == sha256(data)


def test_listing_pages_past_1000_keys(bucket: str, s3_requests):
    keys = [f"data/part-{i:05d}.jsonl" for i in range(1001)]
    seed_objects(bucket, dict.fromkeys(keys, b"x"))

    started = time.monotonic()
    files = open_store(f"s3://{bucket}").list_files(f"s3://{bucket}/data")

    assert time.monotonic() - started < 5
    assert files == [(key.removeprefix("data/"), 1) for key in keys]
    assert len([r for r in s3_requests if "list-type=2" in r.path]) == 2  # 1000 + 1


@pytest.mark.parametrize(
    "bad_key", ["prefix/../evil", "prefix/{tmp}/abs", "prefix/a\\..\\..\\evil", "prefix/./x"]
)
def test_keys_escaping_the_download_folder_are_refused(bucket, bad_key, tmp_path, s3_requests):
    bad_key = bad_key.format(tmp=tmp_path)  # "prefix//tmp/...": an absolute path once relative
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="prefix/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key=bad_key, Body=b"evil")
    dest = tmp_path / "cache" / "data"

    with pytest.raises(StorageError) as raised:
        open_store(f"s3://{bucket}").download_dir(f"s3://{bucket}/prefix", dest)

    assert repr(bad_key.removeprefix("prefix/")) in str(raised.value)
    assert str(raised.value).startswith(f"s3://{bucket}/{bad_key}:")
    assert_clean(raised.value)
    # Refused before anything was fetched or written: only the lock file exists.
    assert object_gets(s3_requests, bucket) == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["data.kubetune-lock"]


def _download_in_child(uri: str, dest: str, barrier, results) -> None:
    barrier.wait()  # both processes race for the same folder
    paths = open_store(uri).download_dir(uri, Path(dest))
    results.put(sorted((str(p.relative_to(dest)), sha256(p.read_bytes())) for p in paths))


def test_concurrent_download_dir_fetches_each_object_once(bucket, tmp_path, s3_requests):
    # spawn, as torchrun does: forking a process that runs the server thread is unsafe.
    store, ctx = open_store(f"s3://{bucket}"), multiprocessing.get_context("spawn")
    store.upload_dir(write_tree(tmp_path / "source", FILES), f"s3://{bucket}/model")
    s3_requests.clear()
    barrier, results = ctx.Barrier(2), ctx.Queue()
    args = (f"s3://{bucket}/model", str(tmp_path / "cache" / "model"), barrier, results)

    children = [ctx.Process(target=_download_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)

    assert [child.exitcode for child in children] == [0, 0]
    expected = sorted((name, sha256(data)) for name, data in FILES.items())
    assert results.get(timeout=5) == results.get(timeout=5) == expected
    assert sorted(object_gets(s3_requests, bucket)) == sorted(f"model/{n}" for n in FILES)


def test_completed_download_is_reused_and_a_crashed_one_redone(bucket, tmp_path, s3_requests):
    store = open_store(f"s3://{bucket}")
    store.upload_dir(write_tree(tmp_path / "source", FILES), f"s3://{bucket}/model")
    dest, uri = tmp_path / "cache" / "model", f"s3://{bucket}/model"
    real_download, calls = store.download_file, []

    def crash_on_third_file(source: str, target: Path) -> Path:
        calls.append(source)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the pod is killed mid-download
        return real_download(source, target)

    store.download_file = crash_on_third_file
    with pytest.raises(KeyboardInterrupt):
        store.download_dir(uri, dest)
    assert not dest.with_name("model" + COMPLETE_SUFFIX).exists() and not dest.exists()

    del store.download_file
    s3_requests.clear()
    store.download_dir(uri, dest)
    assert read_tree(dest) == FILES
    assert sorted(object_gets(s3_requests, bucket)) == sorted(f"model/{n}" for n in FILES)

    s3_requests.clear()
    assert sorted(open_store(uri).download_dir(uri, dest)) == sorted(dest / n for n in FILES)
    assert s3_requests == []  # reused without a single request

    # A marker that no longer matches the folder (a file lost since) means: download again.
    (dest / "config.json").unlink()
    open_store(uri).download_dir(uri, dest)
    assert read_tree(dest) == FILES


def test_missing_bucket_is_named(s3_endpoint: str, tmp_path: Path):
    store = open_store("s3://no-such-bucket")
    (tmp_path / "f").write_bytes(b"x")
    calls = [
        lambda: store.download_dir("s3://no-such-bucket/model", tmp_path / "model"),
        lambda: store.download_file("s3://no-such-bucket/model/config.json", tmp_path / "c"),
        lambda: store.read_bytes("s3://no-such-bucket/progress.json"),
        lambda: store.exists("s3://no-such-bucket/progress.json"),
        lambda: store.upload_file(tmp_path / "f", "s3://no-such-bucket/out/f"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match=r"^s3://no-such-bucket/\S+: no such bucket$") as e:
            call()
        assert_clean(e.value)


def test_missing_key_is_named(root: str, tmp_path: Path):
    store = open_store(root)
    store.write_bytes(join_uri(root, "other.json"), b"{}")
    missing = join_uri(root, "progress.json")
    for call in (
        lambda: store.read_bytes(missing),
        lambda: store.download_file(missing, tmp_path / "progress.json"),
        lambda: store.download_dir(join_uri(root, "model"), tmp_path / "model"),
    ):
        with pytest.raises(StorageError, match="not found") as raised:
            call()
        assert str(raised.value).startswith(root)
        assert_clean(raised.value)


def test_unreachable_endpoint_fails_fast_and_clean(s3_endpoint, monkeypatch, caplog, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    caplog.set_level(logging.DEBUG)  # botocore logs requests at DEBUG: no secret in them either
    config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1)
    store = open_store("s3://bucket", config=config)

    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        store.download_dir("s3://bucket/model", tmp_path / "model")

    assert time.monotonic() - started < 10
    assert str(raised.value).startswith(f"s3://bucket/model: endpoint unreachable: {closed}")
    assert_clean(raised.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("AccessDenied", 403, "access denied"),
        ("InvalidAccessKeyId", 403, "credentials rejected (InvalidAccessKeyId)"),
        ("SignatureDoesNotMatch", 403, "credentials rejected (SignatureDoesNotMatch)"),
        ("SlowDown", 503, "SlowDown: please reduce your request rate ***"),
    ],
)
def test_service_errors_read_as_reasons(s3_endpoint, code, status, reason):
    store = S3Store(config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    with Stubber(store.client) as stub:
        # A server echoing the secret in its message must not get it into ours.
        message = f"please reduce your request rate {SECRET}"
        stub.add_client_error("get_object", code, message, http_status_code=status)
        with pytest.raises(StorageError) as raised:
            store.read_bytes("s3://bucket/progress.json")

    assert str(raised.value).startswith(f"s3://bucket/progress.json: {reason}")
    assert_clean(raised.value)


def test_bad_uris_are_refused(s3_endpoint: str):
    for uri in ("gs://bucket/x", "file://relative/path", "s3:///no-bucket"):
        with pytest.raises(StorageError, match="URI") as raised:
            open_store(uri).read_bytes(uri)
        assert str(raised.value).startswith(uri)
    with pytest.raises(StorageError, match="whole bucket"):
        open_store("s3://bucket").delete_prefix("s3://bucket/")


def test_each_channel_uses_its_own_prefixed_settings(s3_endpoint, monkeypatch, tmp_path):
    """The operator puts each channel's Secret under KUBETUNE_<CHANNEL>_: the data channel here
    reaches the server only through its own endpoint, while plain AWS_* points nowhere."""
    bucket = make_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="train/data.csv", Body=b"text\nhello\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {
        "AWS_ENDPOINT_URL": closed,
        "KUBETUNE_DATA_AWS_ENDPOINT_URL": s3_endpoint,
        "KUBETUNE_DATA_AWS_ACCESS_KEY_ID": "AKIDDATA",
        "KUBETUNE_DATA_AWS_SECRET_ACCESS_KEY": "data-canary-456",
        "KUBETUNE_DATA_AWS_REGION": "eu-west-1",
    }
    runtime = Runtime.from_env(env)
    assert runtime.credentials["data"] == {
        "aws_access_key_id": "AKIDDATA",
        "aws_secret_access_key": "data-canary-456",
        "region_name": "eu-west-1",
        "endpoint_url": s3_endpoint,
    }
    assert runtime.credentials["model"] == {} and "data-canary-456" not in repr(runtime)
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)  # what boto3 would use on its own
    store = open_store(f"s3://{bucket}/train/", runtime.credentials["data"])
    assert store.list_files(f"s3://{bucket}/train/") == [("data.csv", 11)]
