"""The operator for the fault suites: `kubetune operator --standalone` in a process of its own
(started, SIGKILLed, started again), what it works on (a hub, jobs), and the checks that it
converged: one PyTorchJob and one ConfigMap per job, each job's status current."""

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.reliability.api_faults import FaultGate
from tests.support.apiserver import ApiServer
from tests.support.processes import start_operator, stop_operator

NS, PLATFORM = "team-a", "ml-platform"
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
CONFIGMAPS = "/api/v1/namespaces/team-a/configmaps"


class OperatorProcess:
    """`kubetune operator --standalone` against `api` (tests/support/processes.py), started
    again and again: the log of start N is operator-N.log in `logs`."""

    def __init__(self, api: ApiServer, logs: Path, *args: str) -> None:
        self.api, self.logs, self.args = api, logs, args
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"operator-{self.starts}.log"
        self.process = start_operator(self.api, log, "--standalone", "--log-level", "INFO",
                                      *self.args)  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no goodbye; in-flight requests are cut."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    async def stop(self) -> None:
        """SIGTERM, waited for off the loop (the server must answer kopf's goodbye)."""
        if self.alive():
            await stop_operator(self.process)
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def hub(bucket: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "curated", "namespace": PLATFORM},
        "spec": {
            "sharedWith": {"namespaces": [NS]},
            "models": [{"modelId": "llama", "source": f"s3://{bucket}/llama/"}],
        },
    }


def job(name: str, data_bucket: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"hubRef": {"name": "curated", "namespace": PLATFORM}, "modelId": "llama"},
            "data": {"train": f"s3://{data_bucket}/train/"},
            "output": {"uri": f"s3://{data_bucket}/out/{name}/"},
            "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 8, "nodes": 2},
        },
    }


def converged(obj: dict) -> bool:
    """Reconciled for its current spec: a phase, the generation seen, its PyTorchJob named."""
    status, meta = obj.get("status") or {}, obj["metadata"]
    return (
        status.get("phase") == "Pending"  # the PyTorchJob never runs here: no training operator
        and status.get("observedGeneration") == meta.get("generation")
        and status.get("trainingJob") == {"kind": "PyTorchJob", "name": meta["name"]}
    )


async def until_converged(api: ApiServer, names: list[str], timeout: float) -> float:
    """Seconds until every named job has converged (reads the store: no requests)."""
    started = time.monotonic()
    while True:
        jobs = {o["metadata"]["name"]: o for o in api.emulator.objects(api.resource("ftj"))}
        pending = [n for n in names if n not in jobs or not converged(jobs[n])]
        if not pending:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            shown = {n: (jobs.get(n) or {}).get("status") for n in pending[:3]}
            raise AssertionError(f"{len(pending)} jobs not converged in {timeout} s: {shown}")
        await asyncio.sleep(0.1)


def assert_one_child_each(api: ApiServer, names: list[str]) -> Counter:
    """Exactly one PyTorchJob and one ConfigMap per job, owned by it, each created once (201)
    by the server. Returns the creates by (kind, status): 409s are retries that adopted."""
    jobs = {o["metadata"]["name"]: o for o in api.emulator.objects(api.resource("ftj"))}
    pytorchjobs = api.emulator.objects(api.resource("PyTorchJob"))
    assert sorted(p["metadata"]["name"] for p in pytorchjobs) == sorted(names)
    for pj in pytorchjobs:
        owners = [ref["uid"] for ref in pj["metadata"]["ownerReferences"]]
        assert owners == [jobs[pj["metadata"]["name"]]["metadata"]["uid"]]
    configmaps = {o["metadata"]["name"] for o in api.emulator.objects(api.resource("ConfigMap"))}
    assert {f"{n}-trainer-config" for n in names} <= configmaps
    creates = Counter(
        ("PyTorchJob" if c.path == PYTORCHJOBS else "ConfigMap", c.status)
        for c in api.requests  # as the emulator answered; the gate may have rewritten a 201
        if c.method == "POST" and c.path in (PYTORCHJOBS, CONFIGMAPS)
    )
    # Names are unique, so 201s == jobs means no job's child was created twice.
    assert creates[("PyTorchJob", 201)] == len(names), creates
    assert creates[("ConfigMap", 201)] == len(names), creates
    unexpected = {k: v for k, v in creates.items() if k[1] not in (201, 409)}
    assert not unexpected, unexpected
    return creates


async def cluster_with_hub(api: ApiServer, models: str) -> None:
    for namespace in (PLATFORM, NS):
        await api.create_namespace(namespace)
    await api.create(hub(models))


async def hub_ready(api: ApiServer, timeout: float = 60) -> None:
    ready = lambda o: (o.get("status") or {}).get("readyModels") == 1  # noqa: E731
    await api.wait_for("mhub", PLATFORM, "curated", ready, timeout=timeout)


async def create_all(api: ApiServer, names: list[str], data: str) -> None:
    await asyncio.gather(*(api.create(job(name, data)) for name in names))


def job_named(path: str) -> str | None:
    """The job a request names: its FineTuneJob or its PyTorchJob (same name)."""
    parts = path.removesuffix("/status").split("/")
    return parts[-1] if len(parts) > 2 and parts[-2] in ("finetunejobs", "pytorchjobs") else None


async def first_child(api: ApiServer, batch: list[str], timeout: float = 60) -> None:
    """Until the first job of `batch` has its PyTorchJob."""
    deadline = time.monotonic() + timeout
    while not any(api._stored("PyTorchJob", NS, name) for name in batch):
        assert time.monotonic() < deadline, "no PyTorchJob for any job of the batch"
        await asyncio.sleep(0.02)


async def watching(gate: FaultGate, plural: str, timeout: float = 60) -> None:
    """Until the operator has a watch on `plural` open (it reconnects with backoff)."""
    deadline = time.monotonic() + timeout
    while not any(raw.path.endswith(f"/{plural}") for raw in gate.watches.values()):
        assert time.monotonic() < deadline, f"the operator did not watch {plural} again"
        await asyncio.sleep(0.05)
