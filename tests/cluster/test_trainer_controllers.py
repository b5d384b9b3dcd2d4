"""Kubeflow Trainer v2 on the test control plane: the real Trainer turns a TrainJob into a
JobSet, the real JobSet controller into Jobs, kwok runs their pods on the GPU nodes (exit code
and run time from our Stage's annotations, which reach the pods through runtimePatches), Kueue
admits a queued TrainJob or holds it over quota, and the local kubelet runs a TrainJob's two
pods as processes that meet at PET_MASTER_ADDR. Each test prints what the controllers wrote
(TrainJob status, JobSet, Job, pod env): the facts kubetune's status mapping is written from."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.cluster.e2e_support import ensure_namespace, get, kubectl, wait_for
from tests.cluster.images import Image
from tests.cluster.kubelet import LocalKubelet
from tests.cluster.trainer_support import CLUSTER_TRAINING_RUNTIME, trainjob

pytestmark = pytest.mark.cluster
NS = "trainjobs"


@pytest.fixture(scope="module")
def trainer_ns(cluster):
    ensure_namespace(cluster, NS)
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(CLUSTER_TRAINING_RUNTIME))
    yield NS
    kubectl(cluster, "delete", "namespace", NS, "--wait=false")


def apply(plane, obj: dict) -> None:
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(obj))


def condition(obj: dict | None, kind: str) -> dict | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or []
                 if c["type"] == kind and c["status"] == "True"), None)


def wait_condition(plane, name: str, kind: str, timeout: float = 90) -> dict:
    return wait_for(f"TrainJob {name} {kind}",
                    lambda: condition(get(plane, "trainjob", "-n", NS, name), kind) and get(
                        plane, "trainjob", "-n", NS, name), timeout)


def pods(plane, name: str) -> list[dict]:
    return get(plane, "pods", "-n", NS, "-l", f"jobset.sigs.k8s.io/jobset-name={name}")["items"]


def record(what: str, obj) -> None:
    """What the controllers wrote, for the report (pytest -s shows it)."""
    print(f"\n--- {what}\n{json.dumps(obj, indent=1, sort_keys=True)}")


def strip(obj: dict) -> dict:
    """Status with timestamps as they are (the mapping reads them): only managedFields go."""
    return {k: v for k, v in obj.items() if k != "managedFields"}


def test_trainjob_on_two_gpu_nodes_completes(cluster, trainer_ns):
    job = trainjob("ok", NS)
    job["metadata"]["annotations"] = {"kubetune.test/on-the-trainjob": "x"}  # propagated?
    apply(cluster, job)
    done = wait_condition(cluster, "ok", "Complete")
    record("TrainJob ok: spec as stored (the Trainer's defaulting webhook ran)", done["spec"])
    record("TrainJob ok: status (Complete)", done["status"])
    jobset = get(cluster, "jobset", "-n", NS, "ok")
    record("JobSet ok: spec (defaults) and status", {
        "spec": {k: v for k, v in jobset["spec"].items() if k != "replicatedJobs"},
        "replicatedJob": {k: v for k, v in jobset["spec"]["replicatedJobs"][0].items()
                          if k != "template"},
        "status": jobset["status"]})
    job = get(cluster, "jobs", "-n", NS, "-l", "jobset.sigs.k8s.io/jobset-name=ok")["items"][0]
    record("Job ok-node-0: spec less its template", {k: v for k, v in job["spec"].items()
                                                    if k not in ("template", "selector")})
    found = pods(cluster, "ok")
    assert sorted(p["spec"]["nodeName"] for p in found) == ["gpu-0", "gpu-1"]  # 8 GPUs each
    assert all(p["status"]["phase"] == "Succeeded" for p in found)
    container = found[0]["spec"]["containers"][0]
    record("pod ok-node-0-*: node container env, resources, ports",
           {"env": container["env"], "resources": container["resources"],
            "ports": container.get("ports"), "hostname": found[0]["spec"].get("hostname"),
            "subdomain": found[0]["spec"].get("subdomain"),
            "labels": found[0]["metadata"]["labels"],
            "annotations": found[0]["metadata"].get("annotations"),
            "restartPolicy": found[0]["spec"].get("restartPolicy"),
            "tolerations": found[0]["spec"].get("tolerations")})
    assert all("kubetune.test/on-the-trainjob" not in (o["metadata"].get("annotations") or {})
               for o in [jobset, job, *found])  # TrainJob metadata stays on the TrainJob
    env = {e["name"]: e.get("value") or e.get("valueFrom") for e in container["env"]}
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "auto"  # GPUs: torchrun's
    assert env["PET_MASTER_ADDR"] == "ok-node-0-0.ok" and env["PET_MASTER_PORT"] == "29500"
    assert env["PET_NODE_RANK"] == {"fieldRef": {
        "apiVersion": "v1",
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_trainjob_whose_pod_exits_2_fails(cluster, trainer_ns):
    apply(cluster, trainjob("exit2", NS, annotations={"kubetune.test/exit-code": "2"}))
    failed = wait_condition(cluster, "exit2", "Failed")
    record("TrainJob exit2: status (Failed)", failed["status"])
    record("JobSet exit2: status", get(cluster, "jobset", "-n", NS, "exit2")["status"])
    job = get(cluster, "jobs", "-n", NS, "-l", "jobset.sigs.k8s.io/jobset-name=exit2")["items"]
    record("Jobs exit2: status", [j["status"] for j in job])
    codes = {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
             for p in pods(cluster, "exit2") if p["status"]["phase"] == "Failed"}
    assert codes == {2}


def test_suspended_trainjob_runs_no_pod_until_resumed(cluster, trainer_ns):
    apply(cluster, trainjob("held", NS, suspend=True,
                            annotations={"kubetune.test/run-time": "3s"}))
    suspended = wait_condition(cluster, "held", "Suspended", timeout=30)
    record("TrainJob held: status (suspended)", suspended["status"])
    record("JobSet held: spec.suspend and status", {
        "suspend": get(cluster, "jobset", "-n", NS, "held")["spec"].get("suspend"),
        "status": get(cluster, "jobset", "-n", NS, "held").get("status")})
    assert pods(cluster, "held") == []
    kubectl(cluster, "patch", "trainjob", "-n", NS, "held", "--type=merge",
            "-p", '{"spec": {"suspend": false}}')
    running = wait_for("TrainJob held resumed and running", lambda: (
        (tj := get(cluster, "trainjob", "-n", NS, "held")) and any(
            (s.get("active") or 0) > 0 for s in tj["status"].get("jobsStatus") or []) and tj))
    record("TrainJob held: status (resumed, pods running 3 s)", running["status"])
    record("TrainJob held: status (resumed, Complete)",
           wait_condition(cluster, "held", "Complete")["status"])


def test_kueue_admits_a_queued_trainjob_and_holds_one_over_quota(cluster, trainer_ns):
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
              "metadata": {"name": "trainjob-gpu"}}
    queue = {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": "trainjobs"},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
            "flavors": [{"name": "trainjob-gpu", "resources": [
                {"name": "cpu", "nominalQuota": "100"}, {"name": "memory", "nominalQuota": "1Ti"},
                {"name": "nvidia.com/gpu", "nominalQuota": "16"}]}]}]},
    }  # fmt: skip
    local = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
             "metadata": {"name": "gpus", "namespace": NS}, "spec": {"clusterQueue": "trainjobs"}}
    for obj in (flavor, queue, local):
        apply(cluster, obj)
    queued = {"kueue.x-k8s.io/queue-name": "gpus"}
    apply(cluster, trainjob("queued", NS, labels=queued, suspend=True))
    apply(cluster, trainjob("too-big", NS, nodes=3, labels=queued, suspend=True))  # 24 > 16 GPUs
    done = wait_condition(cluster, "queued", "Complete")
    record("TrainJob queued: status (admitted by Kueue, Complete)", done["status"])
    spec = get(cluster, "trainjob", "-n", NS, "queued")["spec"]
    record("TrainJob queued: spec after admission (suspend, runtimePatches)",
           {"suspend": spec.get("suspend"), "runtimePatches": spec["runtimePatches"]})
    held = get(cluster, "trainjob", "-n", NS, "too-big")
    workloads = get(cluster, "workloads.kueue.x-k8s.io", "-n", NS)["items"]
    record("TrainJob too-big: status (held by Kueue)", held.get("status"))
    record("Workloads", [{"name": w["metadata"]["name"], "owner": w["metadata"][
        "ownerReferences"][0]["name"], "conditions": w.get("status", {}).get("conditions")}
        for w in workloads])
    assert held["spec"]["suspend"] is True and pods(cluster, "too-big") == []
    over = next(w for w in workloads if w["metadata"]["ownerReferences"][0]["name"] == "too-big")
    assert not condition(over, "Admitted")


def test_trainer_webhook_refuses_env_patches_of_the_node_container(cluster, trainer_ns):
    bad = trainjob("env-patch", NS)
    patch = bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"] = [
        {"name": "node", "env": [{"name": "X", "value": "1"}]}]
    done = subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "apply", "-f", "-"],
                          input=json.dumps(bad), capture_output=True, text=True)
    print(f"\n--- runtimePatches env on container node: {done.stderr.strip()}")
    assert "denied the request" in done.stderr
    assert get(cluster, "trainjob", "-n", NS, "env-patch") is None


# -- a TrainJob whose pods really run (the local kubelet) ------------------------------------

NODE = "local-0"
# Rank 0 listens on PET_MASTER_PORT, rank 1 connects to PET_MASTER_ADDR: the env contract and
# the pod DNS name (cluster_dns.py) end to end. Each prints its PET_* env as one JSON line.
MEET = textwrap.dedent("""
    import json, os, socket, time
    env = {k: v for k, v in os.environ.items() if k.startswith(("PET_", "HF_", "HOSTNAME"))}
    print(json.dumps(env), flush=True)
    port, rank = int(env["PET_MASTER_PORT"]), int(env["PET_NODE_RANK"])
    if rank == 0:
        server = socket.create_server((env["PET_MASTER_ADDR"], port))
        server.settimeout(60)
        print(server.accept()[0].recv(100).decode(), flush=True)
    else:
        for _ in range(600):
            try:
                socket.create_connection((env["PET_MASTER_ADDR"], port)).sendall(b"rank 1 met 0")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("never reached the master")
""")


def test_trainjob_pods_run_as_local_processes_and_meet_at_the_master(cluster, trainer_ns,
                                                                     tmp_path):
    kubelet = LocalKubelet(cluster, NODE, tmp_path / "kubelet", images={"busybox": Image()})
    kubelet.start()
    try:
        optional = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "no-such-secret", "key": "token", "optional": True}}}
        apply(cluster, trainjob("local", NS, gpus=0, pod_spec={
            "nodeSelector": {"kubernetes.io/hostname": NODE}}, trainer={
            "command": [sys.executable, "-c", MEET], "env": [optional]}))
        done = wait_condition(cluster, "local", "Complete", timeout=120)
        record("TrainJob local: status (Complete, pods run here)", done["status"])
        lines = {p["spec"]["hostname"]: kubelet.log(NS, p["metadata"]["name"], "node")
                 for p in pods(cluster, "local")}
    finally:
        kubelet.stop()
    envs = {host: json.loads(text.splitlines()[0]) for host, text in lines.items()}
    record("env the local kubelet gave the two pods (after name rewriting)", envs)
    assert envs["local-node-0-0"]["PET_NODE_RANK"] == "0"
    assert envs["local-node-0-1"]["PET_NODE_RANK"] == "1"
    assert envs["local-node-0-1"]["PET_MASTER_ADDR"] == "127.0.0.1"  # local-node-0-0.local
    assert "HF_TOKEN" not in envs["local-node-0-0"]  # optional, missing: not set
    assert "rank 1 met 0" in lines["local-node-0-0"]
