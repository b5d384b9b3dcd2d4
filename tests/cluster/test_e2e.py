"""kubetune end to end on the real control plane, once per training backend: the chart
installed by the real helm (with its ClusterTrainingRuntime, as the cluster serves Kubeflow
Trainer), the operator authenticated as the chart's ServiceAccount (its least-privilege RBAC
enforced by the API server), the examples applied with kubectl; then either the real Kubeflow
Trainer and JobSet controllers turning TrainJobs into JobSets, Jobs and pods, or the real
Training Operator turning PyTorchJobs into pods, which the scheduler binds to kwok GPU nodes;
Kueue admitting queued jobs by quota, suspend and resume, and garbage collection when a
FineTuneJob is deleted. S3 is moto."""

import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from kubetune.render.backends import BACKENDS
from tests.cluster.e2e_support import (
    REPO,
    Operator,
    ensure_namespace,
    get,
    hub_ready,
    install_chart,
    kubectl,
    storage_secret,
    wait_for,
)
from tests.support.s3 import s3_server_fixture  # noqa: F401 (fixture, requested by name)

pytestmark = pytest.mark.cluster
EXAMPLES = REPO / "examples"
PLATFORM, TEAM = "ml-platform", "team-a"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def phase(plane, name: str) -> str | None:
    found = get(plane, "ftj", "-n", TEAM, name)
    return ((found or {}).get("status") or {}).get("phase")


def seed_storage(endpoint: str) -> None:
    """What the examples name: the hub's model folders and the jobs' data."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    for bucket in ("models", "datasets", "artifacts", "public-models"):
        s3.create_bucket(Bucket=bucket)
    for hub in yaml.safe_load_all((EXAMPLES / "modelhub.yaml").read_text()):
        for model in hub["spec"]["models"]:
            if "source" in model:
                bucket, _, prefix = model["source"].removeprefix("s3://").partition("/")
                s3.put_object(Bucket=bucket, Key=f"{prefix}config.json", Body=b"{}")
    for key in ("sec-filings/train/filings.csv", "support/train/train.jsonl",
                "support/val/val.jsonl"):  # fmt: skip
        s3.put_object(Bucket="datasets", Key=key, Body=b"text\nhello\n")


@dataclass(frozen=True)
class Installed:
    plane: object
    log: Path  # the operator's
    kind: str  # TrainJob or PyTorchJob: what the operator creates here

    def training_job(self, name: str) -> dict | None:
        return get(self.plane, self.kind.lower(), "-n", TEAM, name)

    def suspended(self, name: str) -> bool:
        return BACKENDS[self.kind].suspended(self.training_job(name))


@pytest.fixture(scope="module", params=["TrainJob", "PyTorchJob"])
def installed(request, cluster, s3_server, tmp_path_factory):
    """helm install of the chart; the operator as its ServiceAccount, with trainingBackend auto
    (the cluster serves both kinds: TrainJob) or pytorchjob; Secrets, data, a kwok g5.12xlarge
    node for the instanceType example; Kueue queues with 4 GPUs of quota. The jobs go when the
    module's run with this backend ends."""
    kind = request.param
    work = tmp_path_factory.mktemp(f"e2e-{kind.lower()}")
    for namespace in (PLATFORM, TEAM):
        ensure_namespace(cluster, namespace)
    install_chart(cluster)
    seed_storage(s3_server)
    secrets = [storage_secret("model-store", ns, s3_server) for ns in (PLATFORM, TEAM)]
    secrets += [storage_secret(n, TEAM, s3_server) for n in ("data-store", "artifact-store")]
    world = [*secrets, g5_node(), *kueue_queues(), priority_class("low")]
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": world}))  # fmt: skip
    setting = {"TrainJob": "auto", "PyTorchJob": "pytorchjob"}[kind]
    # The chart's own ConfigMap is the config file.
    operator = Operator(cluster, work, trainingBackend=setting).start()
    try:
        yield Installed(cluster, operator.log, kind)
    finally:
        kubectl(cluster, "delete", "ftj", "--all", "-n", TEAM, "--wait=true", "--timeout=60s")
        operator.stop()
        print(f"\noperator log: {operator.log}")


def g5_node() -> dict:
    gpus = {"cpu": "48", "memory": "192Gi", "pods": "110", "ephemeral-storage": "500Gi",
            "nvidia.com/gpu": "4"}  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "g5-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": "g5-0",
                                "node.kubernetes.io/instance-type": "g5.12xlarge"}},
        "spec": {"taints": [GPU_TAINT]},
        "status": {"capacity": gpus, "allocatable": gpus},
    }  # fmt: skip


def kueue_queues() -> list[dict]:
    """One flavor, a ClusterQueue with 4 GPUs of quota (BestEffortFIFO: a job that fits may pass
    one that does not), and the team's LocalQueue `team-a` that the instruction example names."""
    big = "100000"
    resources = {"cpu": big, "memory": f"{big}Gi", "ephemeral-storage": f"{big}Gi",
                 "nvidia.com/gpu": "4"}  # fmt: skip
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
         "metadata": {"name": "default"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
         "metadata": {"name": "gpus"},
         "spec": {"namespaceSelector": {}, "queueingStrategy": "BestEffortFIFO",
                  "resourceGroups": [{
                      "coveredResources": list(resources),
                      "flavors": [{"name": "default", "resources": [
                          {"name": k, "nominalQuota": v} for k, v in resources.items()]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": "team-a", "namespace": TEAM}, "spec": {"clusterQueue": "gpus"}},
    ]  # fmt: skip


def priority_class(name: str) -> dict:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": 100}  # fmt: skip


def test_hub_and_two_node_gpu_job_run_on_the_real_controllers(installed):
    plane, log = installed.plane, installed.log
    kubectl(plane, "apply", "-f", str(EXAMPLES / "modelhub.yaml"))
    for hub in ("curated", "public"):  # every model's files are there, references resolved
        wait_for(f"hub {hub} Ready", lambda h=hub: hub_ready(plane, PLATFORM, h))
    kubectl(plane, "apply", "-n", TEAM, "-f", str(EXAMPLES / "finetunejob-domain-adaptation.yaml"))
    job = wait_for(f"the {installed.kind}", lambda: installed.training_job("sec-filings"))
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    pods = wait_for("2 pods bound to GPU nodes", lambda: bound_pods(plane, "sec-filings", 2))
    for pod in pods:
        assert pod["spec"]["nodeName"] in ("gpu-0", "gpu-1", "g5-0")
        [container] = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        print(pod["metadata"]["name"], json.dumps(env, sort_keys=True))
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4", env
        assert pod["spec"]["restartPolicy"] == "Never"  # retries: new pods, by exit code
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"nvidia.com/gpu"} <= {t.get("key") for t in pod["spec"]["tolerations"]}
        if installed.kind == "PyTorchJob":
            assert container["name"] == "pytorch"
            # The Training Operator's WORLD_SIZE counts processes (nodes x nprocPerNode).
            assert env["MASTER_ADDR"] == "sec-filings-master-0" and env["WORLD_SIZE"] == "8", env
        else:
            assert container["name"] == "node" and "MASTER_ADDR" not in env
            assert env["PET_MASTER_ADDR"] == "sec-filings-node-0-0.sec-filings", env
            assert env["PET_MASTER_PORT"] == "29500", env
            rank = next(e for e in container["env"] if e["name"] == "PET_NODE_RANK")
            assert "job-completion-index" in rank["valueFrom"]["fieldRef"]["fieldPath"]
            secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
                           if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
            assert {"data-store", "artifact-store"} <= secret_refs  # one by one: no envFrom
    if installed.kind == "TrainJob":
        jobset = get(plane, "jobset", "-n", TEAM, "sec-filings")
        assert jobset["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"
    assert wait_for("Succeeded", lambda: phase(plane, "sec-filings") == "Succeeded", 180)
    ftj = get(plane, "ftj", "-n", TEAM, "sec-filings")
    assert ftj["status"]["trainingJob"] == {"kind": installed.kind, "name": "sec-filings"}
    assert ftj["status"].get("startTime") and ftj["status"].get("completionTime")
    assert "Forbidden" not in log.read_text(), "the chart's RBAC lacks a verb the operator uses"

    kubectl(plane, "delete", "ftj", "-n", TEAM, "sec-filings", "--wait=true")
    gone = lambda: (not installed.training_job("sec-filings")  # noqa: E731
                    and not get(plane, "configmap", "-n", TEAM, "sec-filings-trainer-config")
                    and not (installed.kind == "TrainJob"
                             and get(plane, "jobset", "-n", TEAM, "sec-filings"))
                    and not bound_pods(plane, "sec-filings", 0, at_least=1))  # fmt: skip
    assert wait_for("garbage collection of the children", gone, 60)


def bound_pods(plane, job: str, count: int, at_least: int | None = None) -> list[dict] | None:
    """The job's pods bound to a node: our label is on them whichever backend made them."""
    found = get(plane, "pods", "-n", TEAM, "-l", f"kubetune.io/finetunejob={job}")
    pods = [p for p in (found or {}).get("items", []) if p["spec"].get("nodeName")]
    if at_least is not None:
        return pods if len(pods) >= at_least else None
    return pods if len(pods) == count else None


def test_kueue_admits_a_queued_job_only_when_its_gang_fits(installed):
    plane = installed.plane
    kubectl(plane, "apply", "-f", str(EXAMPLES / "modelhub.yaml"))
    example = yaml.safe_load((EXAMPLES / "finetunejob-instruction.yaml").read_text())
    too_big = json.loads(json.dumps(example))
    too_big["metadata"]["name"] = "support-bot-large"
    too_big["spec"]["resources"]["nodes"] = 2  # 2 x 4 GPUs: over the queue's 4
    too_big["spec"]["output"]["uri"] = "s3://artifacts/support-bot-large/"
    kubectl(plane, "apply", "-f", "-", stdin=yaml.safe_dump(too_big))
    kubectl(plane, "apply", "-f", str(EXAMPLES / "finetunejob-instruction.yaml"))

    # The fitting one: 1 node (g5.12xlarge, 4 GPUs), admitted, run, done.
    assert wait_for("the fitting job admitted and run",
                    lambda: phase(plane, "support-bot") == "Succeeded", 180)  # fmt: skip
    assert installed.suspended("support-bot-large"), "over quota, yet admitted"
    assert phase(plane, "support-bot-large") == "Queued"
    assert bound_pods(plane, "support-bot-large", 0) == []
    workloads = get(plane, "workloads.kueue.x-k8s.io", "-n", TEAM)["items"]
    admitted = {w["metadata"]["ownerReferences"][0]["name"]: bool(
        (w.get("status") or {}).get("admission")) for w in workloads
        if w["metadata"]["ownerReferences"][0]["kind"] == installed.kind}  # fmt: skip
    assert admitted == {"support-bot": True, "support-bot-large": False}, admitted
    if installed.kind == "TrainJob":  # what it could not carry, said once as an event
        events = get(plane, "events", "-n", TEAM, "--field-selector",
                     "involvedObject.name=support-bot,reason=NotApplied")["items"]  # fmt: skip
        said = " ".join(e["message"] for e in events)
        assert "priorityClassName is not applied" in said and len(events) == 2, said
    kubectl(plane, "delete", "ftj", "-n", TEAM, "support-bot-large", "support-bot", "--wait=true")


def test_suspend_holds_the_job_and_resume_runs_it(installed):
    plane = installed.plane
    kubectl(plane, "apply", "-f", str(EXAMPLES / "modelhub.yaml"))
    example = yaml.safe_load((EXAMPLES / "finetunejob-domain-adaptation.yaml").read_text())
    example["metadata"]["name"] = "paused"
    example["spec"]["suspend"] = True
    example["spec"]["output"]["uri"] = "s3://artifacts/paused/"
    kubectl(plane, "apply", "-f", "-", stdin=yaml.safe_dump(example))
    assert wait_for("Suspended", lambda: phase(plane, "paused") == "Suspended", 60)
    assert installed.suspended("paused") and bound_pods(plane, "paused", 0) == []
    kubectl(plane, "patch", "ftj", "-n", TEAM, "paused", "--type=merge",
            "-p", '{"spec": {"suspend": false}}')  # fmt: skip
    assert wait_for("resumed and run", lambda: phase(plane, "paused") == "Succeeded", 180)
    assert not installed.suspended("paused")
