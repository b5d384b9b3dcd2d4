"""The operator, for real: kopf runs our handlers in this test's loop, with model sources and
outputs on a moto S3 server, against two API servers: the test API server (kmock, our CRDs
enforced, its request log counted) and a real kube-apiserver with a controller-manager
(tests/cluster: real CRD validation, namespaces, garbage collection), fresh for each test."""

import asyncio
import json
import logging
import urllib.request
import uuid
from collections.abc import AsyncIterator

import boto3
import pytest
import pytest_asyncio
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from kubetune.config import OperatorConfig
from tests.cluster.build import go_command
from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OUR_CRDS
from tests.support.apiserver import ApiError, ApiServer, serve
from tests.support.operator import operator_in_loop
from tests.support.realserver import KubeApiServer
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)
from tests.support.upstream import pytorchjob_crd

pytestmark = pytest.mark.asyncio

PLATFORM, TEAM, OTHER = "ml-platform", "team-a", "team-z"
CONFIG = OperatorConfig(progress_interval_seconds=0.2, hub_recheck_seconds=0.5)


def hub(models_bucket: str, **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "curated", "namespace": PLATFORM},
        "spec": {
            "sharedWith": {"namespaces": [TEAM]},
            "models": [
                {
                    "modelId": "llama",
                    "source": f"s3://{models_bucket}/llama/",
                    "eula": {"required": True, "url": "https://example.com/eula", "version": "3.2"},
                    "defaults": {"hyperparameters": {"epoch": 2}},
                }
            ],
            **spec,
        },
    }


def job(name="bot", namespace=TEAM, output="s3://out-bucket/bot/", **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"hubRef": {"name": "curated", "namespace": PLATFORM}, "modelId": "llama"},
            "acceptEula": True,
            "data": {"train": "s3://data/train/"},
            "output": {"uri": output},
            "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 2, "nodes": 2},
            **spec,
        },
    }


@pytest.fixture
def models(s3_endpoint) -> str:
    """A bucket with the hub's model, and the jobs' training data in bucket `data`."""
    bucket = make_bucket()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="llama/config.json", Body=b"{}")
    make_bucket("data")
    s3.put_object(Bucket="data", Key="train/data.csv", Body=b"text\nhello\n")
    return bucket


@pytest.fixture(scope="module")
def real_plane():
    """One kube-apiserver with a controller-manager for the module; each test clears it."""
    if not go_command():  # KUBEBUILDER_ASSETS alone has no controller-manager
        pytest.skip("needs Go to build kube-controller-manager and fetch the PyTorchJob CRD")
    plane = ControlPlane(components=("controller-manager",), crds=[*OUR_CRDS, pytorchjob_crd()])
    plane.start()
    yield plane
    plane.stop()


@pytest_asyncio.fixture(
    params=["test-server", pytest.param("kube-apiserver", marks=pytest.mark.cluster)]
)
async def cluster(request, tmp_path) -> AsyncIterator[ApiServer | KubeApiServer]:
    if request.param == "test-server":
        async with serve(tmp_path) as server:
            yield await with_namespaces(server)
        return
    server = KubeApiServer.of(request.getfixturevalue("real_plane"))
    try:
        yield await with_namespaces(server)
    finally:
        await server.clear((PLATFORM, TEAM, OTHER))  # what this test left, finalizers and all
        await server.close()


async def with_namespaces(server):
    for namespace in (PLATFORM, TEAM, OTHER):
        try:
            await server.create_namespace(namespace)
        except ApiError as err:  # the real server's, from an earlier test of the module
            if err.status != 409:
                raise
    return server


def request_log(server) -> list:
    """The test server's request log; a real server keeps none: those checks are its alone."""
    if server.requests is None:
        pytest.skip("counts requests: the test API server's request log only")
    return server.requests


def operator(api: ApiServer, config: OperatorConfig = CONFIG):
    return operator_in_loop(api, config)


FINALIZER = "kubetune.io/finalizer"


def phase(expected):
    return lambda obj: (obj.get("status") or {}).get("phase") == expected


def condition(obj, type_):
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else None


async def test_job_becomes_a_pytorchjob_with_status_resolved(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job())
        pj = await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await cluster.wait_for("ConfigMap", TEAM, "bot-trainer-config")
        ftj = await cluster.wait_for(
            "ftj", TEAM, "bot", lambda o: "trainingJob" in o.get("status", {})
        )
    assert ftj["status"]["phase"] == "Pending"
    assert pj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert pj["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    status = ftj["status"]
    assert status["resolved"]["hyperparameters"]["epoch"] == 2
    assert status["resolved"]["eulaVersion"] == "3.2"
    assert status["trainingJob"] == {"kind": "PyTorchJob", "name": "bot"}
    assert condition(ftj, "ModelResolved")["status"] == "True"
    assert "status" not in ftj["spec"] and "hyperparameters" not in ftj["spec"]  # spec untouched
    hub_obj = await cluster.get("mhub", PLATFORM, "curated")
    assert hub_obj["status"]["models"] == [
        {"modelId": "llama", "ready": True, "source": f"s3://{models}/llama/"}
    ]


async def test_training_state_progress_and_artifacts_reach_the_status(cluster, models):
    out = make_bucket()
    s3 = boto3.client("s3")
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job(output=f"s3://{out}/bot/"))
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        progress = {"epoch": 1, "step": 5, "total_steps": 20, "percent": 25, "eta_seconds": 30,
                    "train_loss": 2.5, "tokens_per_second": 1000.0}  # fmt: skip
        s3.put_object(Bucket=out, Key="bot/progress.json", Body=json.dumps(progress).encode())
        await set_training_state(cluster, "Running")
        ftj = await cluster.wait_for(
            "ftj", TEAM, "bot", lambda o: (o.get("status") or {}).get("progress"), timeout=10
        )
        assert ftj["status"]["phase"] == "Running"
        assert ftj["status"]["progress"]["percent"] == 25
        assert FINALIZER in ftj["metadata"]["finalizers"]  # the progress timer runs for it
        assert ftj["status"]["metrics"]["trainLoss"] == 2.5

        epoch = {"epoch": 1, "train_loss": 1.0, "eval_loss": 1.2, "eval_perplexity": 3.3}
        final = {
            **epoch,
            "best_epoch": 1,
            "tokens_per_second": 1100.0,
            "train_tokens": 22_000,
            "train_seconds": 20.0,
            "padding_fraction": 0.0,
            "steps": 20,
            "world_size": 1,
            "epochs": [epoch],
            "a_newer_trainers_figure": 7,  # ignored: an older operator reads newer outputs
        }
        s3.put_object(Bucket=out, Key="bot/metrics.json", Body=json.dumps(final).encode())
        s3.put_object(Bucket=out, Key="bot/MANIFEST.json", Body=b"{}")
        await set_training_state(cluster, "Succeeded")
        ftj = await cluster.wait_for("ftj", TEAM, "bot", phase("Succeeded"), timeout=10)
        # Finished: no timer, so no finalizer; it can be deleted with the operator gone.
        released = lambda o: FINALIZER not in o["metadata"].get("finalizers", [])  # noqa: E731
        await cluster.wait_for("ftj", TEAM, "bot", released, timeout=10)
    assert ftj["status"]["metrics"]["evalLoss"] == 1.2
    assert ftj["status"]["artifacts"]["adapter"] == f"s3://{out}/bot/adapter/"
    events = await cluster.list("Event", TEAM)
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "bot"]
    assert "Running" in reasons and "Succeeded" in reasons


async def set_training_state(api, state: str, message: str = "") -> None:
    conditions = [{"type": "Created", "status": "True", "reason": "Created"}]
    conditions.append({"type": state, "status": "True", "reason": f"PyTorchJob{state}",
                       "message": message})  # fmt: skip
    await api.patch_status("PyTorchJob", TEAM, "bot", {"conditions": conditions})


async def test_failed_training_is_failed_with_the_reason(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job())
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await set_training_state(cluster, "Failed", "pod bot-master-0 exited with code 2")
        ftj = await cluster.wait_for("ftj", TEAM, "bot", phase("Failed"), timeout=10)
    assert condition(ftj, "Failed")["message"] == "pod bot-master-0 exited with code 2"


async def test_failed_training_says_what_the_trainer_said(cluster, models):
    """The Training Operator's condition only counts failed replicas; the trainer's
    termination message (kubetune.api.v1alpha1.exits) says what to fix."""
    terminated = {"exitCode": 2, "message": "s3://data/train/data.csv: header row is empty"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bot-master-0", "namespace": TEAM,
                     "labels": {"kubetune.io/finetunejob": "bot"}},
        "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]},
    }  # fmt: skip
    container = {"name": "pytorch", "image": "trainer", "imageID": "", "ready": False,
                 "restartCount": 0, "state": {"terminated": terminated}}
    status = {"phase": "Failed", "containerStatuses": [container]}
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job())
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await cluster.create(pod)  # the kubelet's part: the API server ignores status on create
        await cluster.patch_status("Pod", TEAM, "bot-master-0", status)
        await set_training_state(cluster, "Failed", 'job "bot" is failing because 1 replica failed')
        ftj = await cluster.wait_for("ftj", TEAM, "bot", phase("Failed"), timeout=10)
    failed = condition(ftj, "Failed")
    assert (failed["reason"], failed["message"]) == ("InvalidInput", terminated["message"])


async def test_hub_not_shared_fails_with_hub_access_denied(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job(namespace=OTHER))
        ftj = await cluster.wait_for("ftj", OTHER, "bot", phase("Failed"))
        await asyncio.sleep(0.5)  # long enough for a retry storm to show
    assert condition(ftj, "Failed")["reason"] == "HubAccessDenied"
    assert "not shared with namespace team-z" in condition(ftj, "Failed")["message"]
    assert await cluster.list("PyTorchJob", OTHER) == []
    warnings = [e for e in await cluster.list("Event", OTHER) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["HubAccessDenied"]
    patches = [c for c in request_log(cluster) if c.method == "PATCH" and "/team-z/" in c.path]
    assert len(patches) < 10, patches  # the outcome is written once, not retried


async def test_eula_not_accepted(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job(acceptEula=False))
        ftj = await cluster.wait_for("ftj", TEAM, "bot", phase("Failed"))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "EulaNotAccepted"
    assert "version 3.2, https://example.com/eula" in failed["message"]


async def test_hub_created_after_the_job_lets_it_proceed(cluster, models):
    async with operator(cluster):
        await cluster.create(job())
        ftj = await cluster.wait_for(
            "ftj", TEAM, "bot", lambda o: condition(o, "ModelResolved") is not None
        )
        # A hub of another namespace that does not exist reads as one not shared (no team
        # learns which hubs exist); the timer re-checks it all the same.
        assert ftj["status"]["phase"] == "Failed"
        assert condition(ftj, "ModelResolved")["reason"] == "HubAccessDenied"
        await cluster.create(hub(models))
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)


async def test_suspend_and_resume_follow_spec_suspend(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job())
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await cluster.patch("ftj", TEAM, "bot", {"spec": {"suspend": True}})
        suspended = lambda o: o["spec"]["runPolicy"]["suspend"] is True  # noqa: E731
        await cluster.wait_for("PyTorchJob", TEAM, "bot", suspended)
        await cluster.patch("ftj", TEAM, "bot", {"spec": {"suspend": False}})
        resumed = lambda o: o["spec"]["runPolicy"]["suspend"] is False  # noqa: E731
        await cluster.wait_for("PyTorchJob", TEAM, "bot", resumed)


async def test_delete_cascades_to_the_children(cluster, models):
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.create(job())
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await cluster.delete("ftj", TEAM, "bot")
        # kopf removes its finalizer; then the garbage collector (the test server's own, or
        # the real controller-manager's) deletes the children.
        await cluster.wait_deleted("ftj", TEAM, "bot", timeout=30)
        await cluster.wait_deleted("PyTorchJob", TEAM, "bot", timeout=15)
        await cluster.wait_deleted("ConfigMap", TEAM, "bot-trainer-config", timeout=15)


async def test_operator_restarts_never_duplicate_the_training_job(cluster, models):
    await cluster.create(hub(models))
    for i in range(5):
        await cluster.create(job(name=f"bot-{i}"))
    for _ in range(3):  # stopped at whatever point it reached, then started again
        async with operator(cluster):
            await asyncio.sleep(0.05)
    async with operator(cluster):
        for i in range(5):
            await cluster.wait_for("PyTorchJob", TEAM, f"bot-{i}", timeout=10)
    assert len(await cluster.list("PyTorchJob", TEAM)) == 5
    creates = [
        c for c in request_log(cluster) if c.method == "POST" and c.path.endswith("/pytorchjobs")
    ]
    assert len([c for c in creates if c.status == 201]) == 5


async def test_kubectl_sees_jobs_and_can_wait_for_them(cluster, models, tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(json.dumps(job()))
    async with operator(cluster):
        await cluster.create(hub(models))
        await cluster.kubectl("apply", "--validate=false", "-f", str(manifest))
        await cluster.wait_for("PyTorchJob", TEAM, "bot")
        await cluster.kubectl(
            "wait", "--for=jsonpath={.status.phase}=Pending", "ftj/bot", "-n", TEAM, "--timeout=10s"
        )
        listed = await cluster.kubectl("get", "ftj", "-n", TEAM)
    text = listed if isinstance(listed, str) else getattr(listed, "stdout", str(listed))
    assert "bot" in text and "Pending" in text


async def test_metrics_endpoint_counts_jobs_by_phase(cluster, models):
    async with operator(cluster) as metrics:
        await cluster.create(hub(models))
        await cluster.create(job())
        await cluster.create(job(name="denied", namespace=OTHER))
        await cluster.wait_for("ftj", OTHER, "denied", phase("Failed"))
        await cluster.wait_for("ftj", TEAM, "bot", lambda o: "trainingJob" in o.get("status", {}))
        await cluster.wait_for(
            "mhub", PLATFORM, "curated", lambda o: "readyModels" in o.get("status", {})
        )
        # Served as `kubetune operator --metrics-port` serves it, read over HTTP.
        server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        finally:
            server.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    phases = {s.labels["phase"]: s.value for s in families["kubetune_finetunejobs"].samples}
    assert phases["Pending"] == 1 and phases["Failed"] == 1
    errors = families["kubetune_reconcile_errors"].samples
    assert any(s.labels["reason"] == "HubAccessDenied" for s in errors)
    assert families["kubetune_hub_models_ready"].samples[0].value == 1


async def test_missing_data_waits_and_local_uris_are_refused(cluster, models, caplog):
    caplog.set_level(logging.INFO)
    async with operator(cluster):
        await cluster.create(hub(models))
        later = f"later-{uuid.uuid4().hex[:8]}"  # S3 is shared by both servers' runs
        await cluster.create(job(data={"train": f"s3://data/{later}/"}))
        has = lambda t: lambda o: condition(o, t) is not None  # noqa: E731
        ftj = await cluster.wait_for("ftj", TEAM, "bot", has("DataValidated"), timeout=10)
        assert condition(ftj, "DataValidated")["reason"] == "DataNotFound"
        assert ftj["status"]["phase"] == "Pending" and await cluster.list("PyTorchJob", TEAM) == []
        boto3.client("s3").put_object(Bucket="data", Key=f"{later}/a.csv", Body=b"text\nx\n")
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)

        await cluster.create(job(name="local", output="file:///tmp/out/"))
        ftj = await cluster.wait_for("ftj", TEAM, "local", phase("Failed"))
    assert condition(ftj, "Failed")["reason"] == "LocalUriInCluster"
    # Waiting is not an error: kopf's "failed temporarily" line is INFO for a wait.
    waits = [r for r in caplog.records if "failed temporarily: waiting: " in r.getMessage()]
    assert waits and {r.levelname for r in waits} == {"INFO"}
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [e for e in errors if "reconcile" in e or e.startswith("kubetune")], errors
