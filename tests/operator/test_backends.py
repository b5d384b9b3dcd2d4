"""Training backends against a real kube-apiserver (no training controllers): start-up
discovery picks TrainJob where the cluster serves it, else PyTorchJob; the operator creates a
TrainJob the server's schema (Kubeflow Trainer's CRD) accepts, builds status from TrainJob
conditions, and a job never switches kind once it has one."""

import asyncio
import logging
import subprocess

import pytest
import pytest_asyncio

from kubetune.config import OperatorConfig
from kubetune.controller.discovery import decide
from kubetune.controller.finetunejob import Backends
from kubetune.render.backends import PYTORCHJOB, TRAINJOB
from tests.cluster.build import crd_paths, go_command
from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OUR_CRDS
from tests.support.operator import operator_in_loop
from tests.support.realserver import KubeApiServer
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)
from tests.support.upstream import pytorchjob_crd, trainer_crd, why_not

pytestmark = [pytest.mark.asyncio, pytest.mark.cluster]

PLATFORM, TEAM = "ml-platform", "team-a"
CONFIG = OperatorConfig(progress_interval_seconds=0.2, hub_recheck_seconds=0.5)
BOTH = Backends(new_jobs=TRAINJOB, served=(TRAINJOB, PYTORCHJOB))
V1_ONLY = Backends(new_jobs=PYTORCHJOB, served=(PYTORCHJOB,))


@pytest.fixture(scope="module")
def plane():
    """kube-apiserver and a controller-manager, our CRDs and the PyTorchJob CRD; each test that
    needs the Trainer's CRDs applies them (they stay for the module)."""
    if not go_command() or not trainer_crd("trainjobs"):
        pytest.skip(why_not() or "needs Go to build kube-controller-manager")
    plane = ControlPlane(components=("controller-manager",), crds=[*OUR_CRDS, pytorchjob_crd()])
    plane.start()
    yield plane
    plane.stop()


def install_trainer_crds(plane) -> None:
    for path in crd_paths()["trainer"]:
        if path.name.startswith("trainer.kubeflow.org_"):
            command = ["kubectl", "--kubeconfig", str(plane.kubeconfig), "apply",
                       "--server-side", "-f", str(path)]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)


def trainer_served(plane) -> bool:
    found = subprocess.run(["kubectl", "--kubeconfig", str(plane.kubeconfig), "get", "crd",
                            "trainjobs.trainer.kubeflow.org"], capture_output=True)  # fmt: skip
    return found.returncode == 0


@pytest_asyncio.fixture
async def api(plane):
    server = KubeApiServer.of(plane)
    for namespace in (PLATFORM, TEAM):
        try:
            await server.create_namespace(namespace)
        except Exception:  # noqa: BLE001 (there from an earlier test)
            pass
    try:
        yield server
    finally:
        kinds = ("ftj", "mhub", "pytorchjob", "pod", "event")
        if trainer_served(plane):
            kinds = ("ftj", "mhub", "pytorchjob", "trainjob", "pod", "event")
        await server.clear((PLATFORM, TEAM), kinds=kinds)
        await server.close()


@pytest.fixture
def models(s3_endpoint) -> str:
    import boto3

    bucket = make_bucket()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="llama/config.json", Body=b"{}")
    make_bucket("data")
    s3.put_object(Bucket="data", Key="train/data.csv", Body=b"text\nhello\n")
    return bucket


def hub(bucket: str) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
            "metadata": {"name": "curated", "namespace": PLATFORM},
            "spec": {"sharedWith": {"namespaces": [TEAM]},
                     "models": [{"modelId": "llama",
                                 "source": f"s3://{bucket}/llama/"}]}}  # fmt: skip


def job(name: str = "bot", **spec) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": TEAM},
            "spec": {"model": {"hubRef": {"name": "curated", "namespace": PLATFORM},
                               "modelId": "llama"},
                     "data": {"train": "s3://data/train/"}, "output": {"uri": f"s3://out/{name}/"},
                     "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 8, "nodes": 2},
                     **spec}}  # fmt: skip


def kind_is(kind: str):
    return lambda o: ((o.get("status") or {}).get("trainingJob") or {}).get("kind") == kind


def phase(expected: str):
    return lambda o: (o.get("status") or {}).get("phase") == expected


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


async def test_a_refused_trainjob_waits_with_the_servers_words(plane, api, models):
    """First in the module, before the Trainer's CRDs exist: TrainJob insisted on, the server's
    404 becomes a wait with its words, not an error loop."""
    async with operator_in_loop(api, CONFIG, Backends(new_jobs=TRAINJOB, served=())):
        await api.create(hub(models))
        await api.create(job())
        refused = lambda o: any(c.get("reason") == "TrainingJobRefused"  # noqa: E731
                                for c in (o.get("status") or {}).get("conditions") or [])
        ftj = await api.wait_for("ftj", TEAM, "bot", refused, timeout=10)
    assert ftj["status"]["phase"] == "Pending" and "trainingJob" not in ftj["status"]
    running = condition(ftj, "Running")
    assert running["status"] == "False"
    assert running["message"].startswith("the API server refused the TrainJob (404): ")


async def test_auto_picks_pytorchjob_on_v1_then_trainjob_once_trainer_is_installed(plane, caplog):
    api = plane.api_client()
    caplog.set_level(logging.INFO)
    chosen = decide("auto", api)
    assert (chosen.new_jobs, chosen.served) == (PYTORCHJOB, (PYTORCHJOB,))
    said = "training backend: PyTorchJob (setting auto; the cluster serves PyTorchJob)"
    assert said in caplog.text
    insisted = decide("trainjob", api)
    assert insisted.new_jobs == TRAINJOB and insisted.served == (PYTORCHJOB,)  # not indexed
    assert "jobs will wait until trainer.kubeflow.org/v1alpha1 is installed" in caplog.text

    install_trainer_crds(plane)
    for _ in range(100):  # discovery follows a new CRD within a second or two
        if (chosen := decide("auto", api)).new_jobs == TRAINJOB:
            break
        await asyncio.sleep(0.1)
    assert (chosen.new_jobs, set(chosen.served)) == (TRAINJOB, {TRAINJOB, PYTORCHJOB})
    assert decide("pytorchjob", api).new_jobs == PYTORCHJOB


async def test_a_job_becomes_a_trainjob_and_follows_its_conditions(plane, api, models):
    install_trainer_crds(plane)
    async with operator_in_loop(api, CONFIG, BOTH):
        await api.create(hub(models))
        await api.create(job())
        tj = await api.wait_for("TrainJob", TEAM, "bot")  # the real server took our TrainJob
        ftj = await api.wait_for("ftj", TEAM, "bot", kind_is("TrainJob"), timeout=10)
        assert ftj["status"]["trainingJob"] == {"kind": "TrainJob", "name": "bot"}
        assert ftj["status"]["phase"] == "Pending"
        trainer = tj["spec"]["trainer"]
        assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
        assert tj["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
        assert await api.list("PyTorchJob", TEAM) == []

        jobs = [{"name": "node", "active": 1, "ready": 1, "succeeded": 0, "failed": 0,
                 "suspended": 0}]  # fmt: skip
        await api.patch_status("TrainJob", TEAM, "bot", {"jobsStatus": jobs})
        ftj = await api.wait_for("ftj", TEAM, "bot", phase("Running"), timeout=10)
        assert ftj.get("status", {}).get("startTime")
        done = {"type": "Complete", "status": "True", "reason": "AllJobsCompleted",
                "message": "jobset completed successfully",
                "lastTransitionTime": "2026-12-02T10:00:00Z"}  # fmt: skip
        await api.patch_status("TrainJob", TEAM, "bot", {"conditions": [done]})
        ftj = await api.wait_for("ftj", TEAM, "bot", phase("Succeeded"), timeout=10)
    assert condition(ftj, "Succeeded")["reason"] == "TrainingSucceeded"
    assert ftj["status"]["completionTime"] == "2026-12-02T10:00:00Z"


async def test_a_failed_trainjob_says_what_the_trainer_said(plane, api, models):
    install_trainer_crds(plane)
    said = "s3://data/train/data.csv: header row is empty"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "bot-node-0-0-abcde", "namespace": TEAM,
                        "labels": {"kubetune.io/finetunejob": "bot"}},
           "spec": {"containers": [{"name": "node", "image": "trainer"}]}}  # fmt: skip
    status = {"phase": "Failed", "containerStatuses": [{
        "name": "node", "image": "trainer", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 2, "message": said}}}]}  # fmt: skip
    failed = {"type": "Failed", "status": "True", "reason": "FailedJobs",
              "message": "jobset failed due to one or more job failures",
              "lastTransitionTime": "2026-12-02T10:00:00Z"}  # fmt: skip
    async with operator_in_loop(api, CONFIG, BOTH):
        await api.create(hub(models))
        await api.create(job())
        await api.wait_for("TrainJob", TEAM, "bot")
        await api.create(pod)
        await api.patch_status("Pod", TEAM, pod["metadata"]["name"], status)
        await api.patch_status("TrainJob", TEAM, "bot", {"conditions": [failed]})
        ftj = await api.wait_for("ftj", TEAM, "bot", phase("Failed"), timeout=10)
    failure = condition(ftj, "Failed")
    assert (failure["reason"], failure["message"]) == ("InvalidInput", said)


async def test_a_job_keeps_the_kind_it_started_with(plane, api, models):
    install_trainer_crds(plane)
    async with operator_in_loop(api, CONFIG, V1_ONLY):  # before Kubeflow Trainer came
        await api.create(hub(models))
        await api.create(job("old"))
        await api.wait_for("ftj", TEAM, "old", kind_is("PyTorchJob"), timeout=10)
    async with operator_in_loop(api, CONFIG, BOTH):  # restarted: new jobs get TrainJobs
        await api.create(job("new"))
        await api.wait_for("ftj", TEAM, "new", kind_is("TrainJob"), timeout=10)
        await api.patch("ftj", TEAM, "old", {"spec": {"suspend": True}})  # reconciled again
        suspended = lambda o: o["spec"]["runPolicy"].get("suspend")  # noqa: E731
        old = await api.wait_for("PyTorchJob", TEAM, "old", suspended, timeout=10)
    assert old["metadata"]["name"] == "old"
    assert [t["metadata"]["name"] for t in await api.list("TrainJob", TEAM)] == ["new"]
    assert [p["metadata"]["name"] for p in await api.list("PyTorchJob", TEAM)] == ["old"]
