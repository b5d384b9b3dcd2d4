"""Bad input is refused with a line that says what to fix, and nothing else suffers.

Manifests: the API corpus (tests/api/corpus/invalid) goes to the test API server, which must
answer 422 naming the field; the jobs under corpus/operator pass the CRD and must be stopped
by the running operator (Failed, or waiting when the world may fix it) with a reason and a
message naming the thing to fix, while good jobs created between them all get their
PyTorchJob. `kubetune validate` (and `render`, which resolves offline) must say the same.

Datasets: each broken training folder goes through the trainer's entry point in this process,
and a few through `kubetune run --local` as a user runs it: one error line naming the file
(and line), exit code 2, no traceback, no MANIFEST.json.
"""

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import pytest_asyncio
import yaml

from kubetune.api.manifests import read_documents
from kubetune.api.v1alpha1 import Hyperparameters
from kubetune.cli.main import main as kubetune_main
from kubetune.config import OperatorConfig
from kubetune_trainer import train as trainer
from tests.reliability.bad_datasets import DATASETS, BadData
from tests.support.apiserver import ApiError, ApiServer, serve
from tests.support.operator import operator_in_loop
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)
from tests.support.tiny_models import build_tiny_llama, build_tokenizer
from tests.support.training import WORDS, sentences

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
CRD_CORPUS = sorted((REPO / "tests" / "api" / "corpus" / "invalid").glob("*.yaml"))
OPERATOR_CORPUS = sorted((CORPUS / "operator").glob("*.yaml"))
HUBS = CORPUS / "hubs.yaml"
PLATFORM, TEAM, VAULT = "ml-platform", "team-a", "ml-vault"
# The refresh timer re-resolves every job not finished, the bad ones too: a longer interval
# keeps ~50 jobs from loading a 2-core CI machine. Creation needs no timer.
CONFIG = OperatorConfig(progress_interval_seconds=5, hub_recheck_seconds=5)
STRICT = {"fieldValidation": "Strict"}  # as kubectl apply sends: unknown fields are refused


# ----- manifests ---------------------------------------------------------------------------


def load(path: Path) -> dict:
    """The file's one object, read as `kubetune validate` reads it (YAML 1.2 numbers)."""
    (doc,) = read_documents(str(path), path.read_text(encoding="utf-8"))
    return doc.body


def crd_field(path: Path) -> str:
    return re.match(r"# expect: (\S+)\n", path.read_text(encoding="utf-8"))[1]


@dataclass(frozen=True)
class Stopped:
    """What a corpus/operator job expects, from its header lines."""

    reason: str  # the condition reason
    waits: bool  # Pending, retried (the world may fix it), rather than Failed
    names: list[str]  # what the message must name
    offline: str  # what catches it without a cluster: render, cluster (validate --cluster), none
    offline_reason: str  # the reason render gives: `reason` unless the header says otherwise


def stopped(path: Path) -> Stopped:
    header = re.findall(
        r"^# (reason|outcome|names|offline|offline-reason): (.+)$", path.read_text(), re.M
    )
    values = {key: [v for k, v in header if k == key] for key in ("reason", "outcome", "names")}
    offline = next(v for k, v in header if k == "offline")
    offline_reason = next((v for k, v in header if k == "offline-reason"), values["reason"][0])
    return Stopped(values["reason"][0], values["outcome"] == ["waits"], values["names"], offline,
                   offline_reason)  # fmt: skip


def good_job(name: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {
            "model": {"hubRef": {"name": "curated", "namespace": PLATFORM}, "modelId": "llama"},
            "acceptEula": True,
            "data": {"train": "s3://rel-data/train/"},
            "output": {"uri": f"s3://rel-out/{name}/"},
        },
    }


def interleaved(first: list, second: list) -> list:
    """second's items spread evenly among first's."""
    step = max(len(first) // max(len(second), 1), 1)
    out, rest = [], list(second)
    for i, item in enumerate(first):
        out.append(item)
        if i % step == step - 1 and rest:
            out.append(rest.pop(0))
    return out + rest


def operator(api: ApiServer):
    return operator_in_loop(api, CONFIG)


def conditions(obj: dict) -> list[dict]:
    return (obj.get("status") or {}).get("conditions") or []


def with_reason(reason: str):
    return lambda obj: any(c["reason"] == reason for c in conditions(obj))


def hub_checked(obj: dict) -> bool:
    return any(m["ready"] for m in (obj.get("status") or {}).get("models", []))


def tracebacks_in(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.exc_info or "Traceback" in r.getMessage()
    ]


@pytest_asyncio.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[ApiServer]:
    """The test API server; a short request history keeps its cost per request flat over the
    few thousand requests of a suite (kmock matches each request against its history)."""
    async with serve(tmp_path, short_history=True) as server:
        yield server


@pytest.mark.asyncio
async def test_operator_refuses_bad_jobs_and_keeps_reconciling_good_ones(
    apiserver, s3_endpoint, caplog, figures
):
    caplog.set_level(logging.INFO)
    for namespace in (PLATFORM, TEAM, VAULT):
        await apiserver.create_namespace(namespace)
    s3 = boto3.client("s3")
    for bucket in ("rel-models", "rel-data", "rel-out"):
        make_bucket(bucket)
    s3.put_object(Bucket="rel-models", Key="llama/config.json", Body=b"{}")
    s3.put_object(Bucket="rel-data", Key="train/data.csv", Body=b"text\nhello\n")
    expected = {path.stem: stopped(path) for path in OPERATOR_CORPUS}
    bad = interleaved([("crd", p) for p in CRD_CORPUS], [("operator", p) for p in OPERATOR_CORPUS])

    refused, good = {}, []
    async with operator(apiserver):
        for hub in yaml.safe_load_all(HUBS.read_text()):
            await apiserver.create(hub)
        await apiserver.wait_for("mhub", PLATFORM, "curated", hub_checked)
        for i, (kind, path) in enumerate(bad):
            body = load(path)
            if kind == "crd":
                body.setdefault("metadata", {}).setdefault("namespace", TEAM)
                with pytest.raises(ApiError) as error:
                    await apiserver.create(body, **STRICT)
                refused[path.name] = error.value
            else:
                await apiserver.create(body, **STRICT)
            if i % 4 == 3:  # a good job every few bad ones: the operator must not stall
                good.append(f"good-{i}")
                await apiserver.create(good_job(good[-1]))
        for name in good:
            await apiserver.wait_for("PyTorchJob", TEAM, name, timeout=30)
        outcomes = {
            name: await apiserver.wait_for("ftj", TEAM, name, with_reason(want.reason), 30)
            for name, want in expected.items()
        }
        await asyncio.sleep(1)  # time for a retry storm to show, were there one
        pytorchjobs = {p["metadata"]["name"] for p in await apiserver.list("PyTorchJob", TEAM)}
        events = await apiserver.list("Event", TEAM)

    # The API server refuses every invalid manifest of the API corpus, naming its field.
    for path in CRD_CORPUS:
        error, field = refused[path.name], crd_field(path)
        if field == "metadata.namespace":  # a namespace that cannot exist: nowhere to post
            assert error.status == 404 and "Team_A" in error.message, error
        else:
            assert error.status == 422 and field in error.message, (path.name, error)

    # The operator stops each semantically bad job with a reason and a message that says
    # what to fix; those the world may fix wait (Pending, retried), the others fail.
    for name, want in expected.items():
        ftj = outcomes[name]
        found = next(c for c in conditions(ftj) if c["reason"] == want.reason)
        assert ftj["status"]["phase"] == ("Pending" if want.waits else "Failed"), (name, ftj)
        for fragment in want.names:
            assert fragment in found["message"], (name, fragment, found["message"])
        if not want.waits:
            failed = next(c for c in conditions(ftj) if c["type"] == "Failed")
            assert (failed["reason"], failed["message"]) == (want.reason, found["message"])
            warned = [e for e in events if e["involvedObject"]["name"] == name]
            # Announced as a Warning Event with that reason (once; seen twice in one run out
            # of many, under load: kopf.event is not idempotent when a handler runs again).
            said = [(e["reason"], e["message"]) for e in warned if e["type"] == "Warning"]
            assert {reason for reason, _ in said} == {want.reason}, (name, said)

    # ... and every good job created between them got its PyTorchJob; no bad one did.
    assert pytorchjobs == set(good)
    assert tracebacks_in(caplog.records) == []
    figures.add("bad manifests rejected by the CRD (422)", len(refused))
    figures.add("bad manifests rejected by the operator", len(expected))
    figures.record(
        "of those, waiting (retried) rather than failed",
        sum(w.waits for w in expected.values()),
    )
    figures.record("good jobs reconciled beside them", len(good))
    figures.add("tracebacks seen", len(tracebacks_in(caplog.records)))


def cli(*args: str) -> tuple[int, str, str]:
    """`kubetune ARGS` in this process: (exit code, stdout, stderr); an exception propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kubetune_main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_validate_names_the_field_of_every_bad_manifest(figures):
    for path in CRD_CORPUS:
        code, out, err = cli("validate", str(path))
        lines = out.splitlines()
        assert code == 1 and err == "", (path.name, out, err)
        assert lines and all(line.startswith(f"{path}: ") for line in lines), out
        assert len(lines) == 1 or path.name == "unknown-root-field.yaml", out  # spec + specs
        assert any(crd_field(path) in line for line in lines), (path.name, out)
    figures.add("bad manifests rejected by kubetune validate", len(CRD_CORPUS))

    # The real command over all of them at once: no traceback, a line for each file.
    done = subprocess.run(
        [sys.executable, "-m", "kubetune.cli.main", "validate", "-q", *map(str, CRD_CORPUS)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert {line.split(": ")[0] for line in done.stdout.splitlines()} == set(map(str, CRD_CORPUS))


def test_offline_commands_catch_what_needs_no_cluster(figures):
    """The operator corpus passes `validate` (the CRD accepts it); `validate --cluster` and
    `render` (the operator's resolver on the hub files) catch what needs no cluster state."""
    caught = 0
    for path in OPERATOR_CORPUS:
        want = stopped(path)
        assert cli("validate", str(path))[0] == 0, path.name
        code, out, err = cli("validate", "--cluster", str(path))
        if want.offline == "cluster":
            (line,) = out.splitlines()
            assert code == 1 and re.search(r": spec\.[a-z.]+: '", line), line
            assert all(fragment in line for fragment in want.names[:1]), line
        else:
            assert code == 0, out
        code, out, err = cli("render", str(path), "--hub", str(HUBS))
        if want.offline == "render":
            (line,) = err.splitlines()
            assert code == 2 and out == "", (path.name, err)
            assert line.startswith(f"kubetune: error: {want.offline_reason}: "), line
            # Offline the hub "is not among the hubs given" rather than "does not exist".
            names = [n.removeprefix("ModelHub ") for n in want.names]
            assert all(fragment in line for fragment in names), (path.name, line)
        else:
            assert code == 0, (path.name, err)
        caught += want.offline != "none"
    figures.record("operator-level bad manifests caught offline (validate --cluster, render)",
                   f"{caught} of {len(OPERATOR_CORPUS)}")  # fmt: skip


@pytest.mark.asyncio
async def test_a_job_that_cannot_run_in_a_cluster_fails_before_waiting_for_a_secret(
    apiserver, s3_endpoint
):
    for namespace in (PLATFORM, TEAM):
        await apiserver.create_namespace(namespace)
    make_bucket("rel-models")
    boto3.client("s3").put_object(Bucket="rel-models", Key="llama/config.json", Body=b"{}")
    body = good_job("two-problems")
    body["spec"]["data"] = {"train": "file:///data/train.jsonl", "secretRef": {"name": "nope"}}
    async with operator(apiserver):
        (curated, *_) = yaml.safe_load_all(HUBS.read_text())
        await apiserver.create(curated)
        await apiserver.wait_for("mhub", PLATFORM, "curated", hub_checked)
        await apiserver.create(body, **STRICT)
        data_checked = lambda o: any(c["type"] == "DataValidated" for c in conditions(o))  # noqa: E731
        ftj = await apiserver.wait_for("ftj", TEAM, "two-problems", data_checked, timeout=20)
    assert ftj["status"]["phase"] == "Failed", conditions(ftj)
    assert conditions(ftj)[-1]["reason"] == "LocalUriInCluster"


# ----- datasets ----------------------------------------------------------------------------

# Through `kubetune run --local` as well: the three that once let a traceback through, and one
# of each kind of problem besides.
END_TO_END = ["json-nested-too-deeply", "record-lone-surrogate", "template-attribute-access",
              "csv-ragged-rows"]  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny Llama and its tokenizer in Hugging Face layout: a hub model's source."""
    path = tmp_path_factory.mktemp("model")
    tokenizer = build_tokenizer(sentences(50) + WORDS, path)
    build_tiny_llama(path, len(tokenizer), tokenizer=tokenizer)
    return path


def write_case(root: Path, case: BadData) -> Path:
    for channel, files in (("train", case.train), ("validation", case.validation)):
        if files is None:
            continue
        (root / channel).mkdir(parents=True)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.encode()
            (root / channel / name).write_bytes(data)
    return root


def hyperparameters(case: BadData) -> dict:
    return {"instruction_tuned": case.instruction, "epoch": 1, **case.hyperparameters}


def trainer_config(root: Path, model: Path, case: BadData, uid: str) -> Path:
    validation = f"file://{root}/validation" if case.validation is not None else None
    config = {
        "job": {"name": root.name, "namespace": "test", "uid": uid},
        "model": {"modelId": "tiny-llama", "source": f"file://{model}"},
        "data": {"train": f"file://{root}/train", "validation": validation},
        "hyperparameters": Hyperparameters(**hyperparameters(case)).model_dump(),
        "output": {"uri": f"file://{root}/out"},
    }
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_bad_datasets_are_refused_by_the_trainer_naming_the_file(
    tmp_path, model, monkeypatch, caplog, figures
):
    monkeypatch.setenv("KUBETUNE_SCRATCH", str(tmp_path / "scratch"))
    caplog.set_level(logging.INFO)
    refused, tracebacks = 0, []
    for i, (name, case) in enumerate(DATASETS.items()):
        root = write_case(tmp_path / name, case)
        config = trainer_config(root, model, case, uid=f"uid-{i}")
        caplog.clear()
        try:
            code = trainer.main(["--config", str(config)])
        except BaseException as err:  # what would reach a user as a traceback
            tracebacks.append(f"{name}: {type(err).__name__}: {err}")
            continue
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert code == 2, (name, code, [r.getMessage() for r in caplog.records][-5:])
        (error,) = errors
        message = error.getMessage()
        assert "\n" not in message and error.exc_info is None, (name, message)
        assert f"file://{root}/{case.names}" in message, (name, message)
        for words in case.says:
            assert words in message, (name, words, message)
        assert not (root / "out" / "MANIFEST.json").exists()
        tracebacks += tracebacks_in(caplog.records)
        refused += 1
    assert tracebacks == []
    assert refused >= 20
    figures.add("bad datasets rejected", refused)
    figures.add("tracebacks seen", len(tracebacks))


def local_run(root: Path, model: Path, case: BadData) -> list[str]:
    """The files and command of `kubetune run --local` for one broken dataset."""
    hub = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "local"},
        "spec": {"models": [{"modelId": "tiny-llama", "source": f"file://{model}"}]},
    }
    data = {"train": f"file://{root}/train"}
    if case.validation is not None:
        data["validation"] = f"file://{root}/validation"
    job = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "bad-data"},
        "spec": {
            "model": {"hubRef": {"name": "local"}, "modelId": "tiny-llama"},
            "data": data,
            "hyperparameters": hyperparameters(case),
            "output": {"uri": f"file://{root}/out"},
        },
    }
    (root / "hub.yaml").write_text(yaml.safe_dump(hub))
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    return [
        sys.executable, "-m", "kubetune.cli.main", "run", str(root / "job.yaml"),
        "--hub", str(root / "hub.yaml"), "--local", "--scratch", str(root / "scratch"),
    ]  # fmt: skip


def test_bad_datasets_through_kubetune_run_local_are_one_line(tmp_path, model, figures):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = {}
    for name in END_TO_END:  # side by side: each is mostly the trainer's imports
        root = write_case(tmp_path / name, DATASETS[name])
        runs[name] = (root, subprocess.Popen(
            local_run(root, model, DATASETS[name]), cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    tracebacks = 0
    for name, (root, process) in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        case = DATASETS[name]
        tracebacks += ("Traceback" in stdout + stderr) + (
            "Traceback" in (root / "scratch" / "default" / "bad-data" / "trainer.log").read_text()
        )
        assert process.returncode == 2, (name, stderr[-3000:])
        assert stdout == ""
        *_, last = stderr.splitlines()
        assert stderr.count("kubetune: error: ") == 1, stderr
        assert last.startswith(f"kubetune: error: file://{root}/{case.names}"), (name, last)
        assert all(words in last for words in case.says), (name, last)
        assert not (root / "out" / "MANIFEST.json").exists()
    assert tracebacks == 0
    figures.record("bad datasets also run through `kubetune run --local`", len(END_TO_END))
    figures.add("tracebacks seen", tracebacks)
