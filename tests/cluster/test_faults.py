"""The operator under faults on the real control plane: kube-apiserver SIGKILLed and started
again (same port, same etcd) while jobs are created, and the operator itself SIGKILLed again
and again. Whatever happens, each FineTuneJob ends with exactly one PyTorchJob, created once
(the API server's audit log counts the creates it answered), and reaches its outcome.

Jobs ask for one GPU each: kwok's GPU nodes run their pods (1 s each), so every job can finish.
Figures (seconds to converge, restarts, creates) are printed: `pytest -s` shows them. Random
moments come from a seed, printed; KUBETUNE_FAULT_SEED=<n> replays a schedule."""

import os
import random
import re
import threading
import time
import uuid
from collections import Counter

import boto3
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError

from tests.cluster.e2e_support import (
    Operator,
    ensure_namespace,
    get,
    hub_ready,
    install_chart,
    storage_secret,
    wait_for,
)
from tests.support.s3 import s3_server_fixture  # noqa: F401 (fixture, requested by name)

pytestmark = pytest.mark.cluster
# Status follows the PyTorchJob within 2 s; PyTorchJobs, where the cluster serves TrainJobs too.
SETTINGS = {"progressIntervalSeconds": 2, "trainingBackend": "pytorchjob"}
CONVERGE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def storage(cluster, s3_server):
    """Buckets with a model folder and training data, for every namespace of this module."""
    install_chart(cluster)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="model/config.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="train/data.csv", Body=b"text\nhello\n")
    return s3_server, bucket


def namespace_with_hub(plane, storage, namespace: str) -> None:
    endpoint, bucket = storage
    ensure_namespace(plane, namespace)
    plane.create([storage_secret("store", namespace, endpoint), {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
        "metadata": {"name": "hub", "namespace": namespace},
        "spec": {"storage": {"secretRef": {"name": "store"}},
                 "models": [{"modelId": "tiny", "source": f"s3://{bucket}/model/"}]}}])  # fmt: skip


def job(name: str, namespace: str, bucket: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"hubRef": {"name": "hub", "namespace": namespace}, "modelId": "tiny"},
            "data": {"train": f"s3://{bucket}/train/", "secretRef": {"name": "store"}},
            "output": {"uri": f"s3://{bucket}/out/{namespace}/{name}/",
                       "secretRef": {"name": "store"}},
            "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 1, "nodes": 1},
        },
    }  # fmt: skip


def create(plane, body: dict) -> int:
    """Create, retrying while the API server is away; 409: an earlier try got through.
    Returns the tries it took."""
    api = plane.dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    for tries in range(1, 200):
        try:
            api.create(body=body, namespace=body["metadata"]["namespace"])
            return tries
        except ConflictError:
            return tries
        except (urllib3.exceptions.HTTPError, ApiException, OSError) as err:
            if isinstance(err, ApiException) and err.status and err.status < 500:
                raise
            time.sleep(0.2)
    raise AssertionError(f"could not create {body['metadata']['name']}")


def converged(plane, namespace: str, names: list[str]) -> list[str]:
    """The jobs not yet at their outcome: Succeeded, for their spec, with their PyTorchJob."""
    found = {o["metadata"]["name"]: o for o in (get(plane, "ftj", "-n", namespace) or {})
             .get("items", [])}  # fmt: skip
    return [n for n in names if not (
        (status := (found.get(n) or {}).get("status") or {}).get("phase") == "Succeeded"
        and status.get("observedGeneration") == found[n]["metadata"]["generation"]
        and status.get("trainingJob") == {"kind": "PyTorchJob", "name": n})]  # fmt: skip


def wait_converged(plane, namespace: str, names: list[str]) -> float:
    started = time.monotonic()
    deadline = started + CONVERGE_TIMEOUT_S
    while pending := converged(plane, namespace, names):
        if time.monotonic() > deadline:
            shown = {n: (get(plane, "ftj", "-n", namespace, n) or {}).get("status")
                     for n in pending[:2]}  # fmt: skip
            raise AssertionError(f"{len(pending)} jobs not converged: {shown}")
        time.sleep(1)
    return time.monotonic() - started


def assert_one_pytorchjob_each(plane, namespace: str, names: list[str], log: str) -> Counter:
    """One PyTorchJob per job, owned by it, created once: the API server answered exactly one
    create of each with 201 (audit log); the operator logged "created" at most once each.
    Returns the server's answers to the creates, by code."""
    jobs = {o["metadata"]["name"]: o for o in get(plane, "ftj", "-n", namespace)["items"]}
    pytorchjobs = get(plane, "pytorchjobs", "-n", namespace)["items"]
    assert sorted(p["metadata"]["name"] for p in pytorchjobs) == sorted(names)
    for pj in pytorchjobs:
        owners = [ref["uid"] for ref in pj["metadata"]["ownerReferences"]]
        assert owners == [jobs[pj["metadata"]["name"]]["metadata"]["uid"]]
    creates = [e for e in plane.audit_events() if e["objectRef"].get("namespace") == namespace
               and e["objectRef"]["resource"] == "pytorchjobs"]  # fmt: skip
    answered = Counter(e["responseStatus"]["code"] for e in creates)
    created = Counter(e["objectRef"].get("name") for e in creates
                      if e["responseStatus"]["code"] == 201)  # fmt: skip
    twice = {n: c for n, c in created.items() if c > 1}
    assert not twice, f"PyTorchJobs created more than once: {twice}"
    assert sum(created.values()) <= len(names) and set(created) <= set(names), created
    logged = Counter(re.findall(rf"PyTorchJob {namespace}/(\S+) created", log))
    assert all(count == 1 for count in logged.values()), logged
    adopted = len(re.findall(rf"PyTorchJob {namespace}/\S+ exists already", log))
    print(f"{namespace}: PyTorchJob creates answered {dict(answered)}; the operator logged "
          f"{sum(logged.values())} 'created', {adopted} 'exists already: adopted'")
    return answered


def fault_seed(label: str) -> random.Random:
    value = int(os.environ.get("KUBETUNE_FAULT_SEED") or random.randrange(2**31))
    print(f"{label}: fault seed {value} (KUBETUNE_FAULT_SEED={value} replays this schedule)")
    return random.Random(value)


def test_apiserver_sigkilled_and_restarted_while_jobs_are_created(cluster, storage,
                                                                  tmp_path):  # fmt: skip
    namespace, names = "faults-apiserver", [f"job-{i:02d}" for i in range(20)]
    namespace_with_hub(cluster, storage, namespace)
    # As the chart runs it (peering); DEBUG: kopf says when a watch restarts on 410 Gone.
    operator = Operator(cluster, tmp_path, "--log-level", "DEBUG", **SETTINGS).start()
    try:
        wait_for("hub Ready", lambda: hub_ready(cluster, namespace, "hub"), 60)
        tries = {}

        def create_all() -> None:
            for name in names:  # one every 0.25 s: the restart lands in the middle
                tries[name] = create(cluster, job(name, namespace, storage[1]))
                time.sleep(0.25)

        creating = threading.Thread(target=create_all)
        creating.start()
        time.sleep(1.5)
        down = cluster.restart_apiserver(down_seconds=2)
        creating.join(timeout=120)
        converge_s = wait_converged(cluster, namespace, names)
        time.sleep(2)  # time for a late duplicate to show
        cluster.check()  # every component lived through it
        log = operator.logs()
    finally:
        operator.stop()
    print(f"apiserver down for {down:.1f} s (kill to ready); {len(tries)} jobs, "
          f"{sum(t > 1 for t in tries.values())} creates retried; converged {converge_s:.1f} s "
          "after the last create")
    relists = log.count("Restarting the watch-stream")
    forbidden = len(re.findall(r"failed with an exception.*\(403\)", log))
    print(f"operator: {relists} watches restarted on 410 Gone, {forbidden} handlers failed on "
          "403 Forbidden (RBAC not yet loaded by the new API server) and waited kopf's 60 s")
    print("operator lines on the outage:", *watch_lines(log), sep="\n  ")
    assert_one_pytorchjob_each(cluster, namespace, names, log)


def test_operator_sigkilled_again_and_again_while_jobs_are_created(cluster, storage, tmp_path):
    namespace, names = "faults-operator", [f"job-{i:02d}" for i in range(30)]
    namespace_with_hub(cluster, storage, namespace)
    rng = fault_seed("operator kills")
    # Lives of 1.5-5 s: kopf works about 1.5 s after a start, so kills land in start-up,
    # between a ConfigMap and its PyTorchJob, between the PyTorchJob and the status patch.
    lifetimes = [rng.uniform(1.5, 5.0) for _ in range(rng.randint(5, 10))]
    create_at = sorted(rng.uniform(0, 0.8 * sum(lifetimes)) for _ in names)
    # Standalone: a SIGKILLed peer's record outlives it (kopf peering, 60 s); a new replica of
    # lower priority would stand by until then. Peering is the chart's two-replica setup.
    operator = Operator(cluster, tmp_path, "--standalone", **SETTINGS).start()
    try:
        wait_for("hub Ready", lambda: hub_ready(cluster, namespace, "hub"), 60)
        started = time.monotonic()

        def create_all() -> None:
            for name, at in zip(names, create_at, strict=True):
                time.sleep(max(0.0, started + at - time.monotonic()))
                create(cluster, job(name, namespace, storage[1]))

        creating = threading.Thread(target=create_all)
        creating.start()
        for lifetime in lifetimes:
            time.sleep(lifetime)
            operator.kill()
            operator.start()
        creating.join(timeout=60)
        last_start = time.monotonic()
        wait_converged(cluster, namespace, names)
        converge_s = time.monotonic() - last_start
        time.sleep(2)
        log = operator.logs()
    finally:
        operator.stop()
    print(f"operator SIGKILLed {len(lifetimes)} times (lives {min(lifetimes):.1f}-"
          f"{max(lifetimes):.1f} s) while {len(names)} jobs were created; converged "
          f"{converge_s:.1f} s after its last start")
    answered = assert_one_pytorchjob_each(cluster, namespace, names, log)
    assert answered[201] == len(names), answered  # the server was never away: all audited


def watch_lines(log: str) -> list[str]:
    """The operator's warnings and errors during the outage, and its watch restarts: one line
    per kind (numbers, ports and resource versions made alike)."""
    seen, lines = set(), []
    for line in log.splitlines():
        if not (" ERROR " in line or " WARNING " in line or "Restarting the watch" in line):
            continue
        kind = re.sub(r"https://\S+|\d+", "N", line[24:])[:90]
        if kind not in seen:
            seen.add(kind)
            lines.append(line[:200])
    return lines


def test_two_replicas_peer_one_acts_and_the_other_takes_over(cluster, storage, tmp_path):
    """The chart's two-replica setup on the real server (its peering CRDs and object): once
    both replicas are in the peering object, one creates every PyTorchJob; after SIGTERM to
    it, the other creates the next ones. No PyTorchJob is created twice."""
    namespace, first, later = "peering", ["job-a", "job-b", "job-c"], ["job-d", "job-e"]
    namespace_with_hub(cluster, storage, namespace)
    replicas = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        replicas.append(Operator(cluster, tmp_path / name, **SETTINGS).start())
    try:
        wait_for("hub Ready", lambda: hub_ready(cluster, namespace, "hub"), 60)
        wait_for("both replicas in the peering object", lambda: len(
            (get(cluster, "clusterkopfpeering", "kubetune") or {}).get("status") or {}) >= 2, 60)
        for name in first:
            create(cluster, job(name, namespace, storage[1]))
        wait_converged(cluster, namespace, first)
        creators = [r for r in replicas if f"PyTorchJob {namespace}/" in r.logs()]
        assert len(creators) == 1, "both replicas acted"
        acting, standby = creators[0], next(r for r in replicas if r is not creators[0])
        acting.stop()  # SIGTERM: kopf takes its entry out of the peering object as it goes
        for name in later:
            create(cluster, job(name, namespace, storage[1]))
        took_over = time.monotonic()
        wait_converged(cluster, namespace, later)
        print(f"peering: the standby replica took over in {time.monotonic() - took_over:.1f} s")
        assert all(f"PyTorchJob {namespace}/{n} created" in standby.logs() for n in later)
        assert_one_pytorchjob_each(cluster, namespace, first + later,
                                   acting.logs() + standby.logs())  # fmt: skip
    finally:
        for replica in replicas:
            replica.stop()
