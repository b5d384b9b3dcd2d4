"""kubetune end to end on the real control plane: the chart installed by the real helm, the
operator authenticated as the chart's ServiceAccount (its least-privilege RBAC enforced by the
API server), the examples applied with kubectl, the real Training Operator turning PyTorchJobs
into pods that the scheduler binds to kwok GPU nodes, Kueue admitting queued jobs by quota, and
garbage collection when a FineTuneJob is deleted. S3 is moto."""

import json

import boto3
import pytest
import yaml

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


@pytest.fixture(scope="module")
def installed(cluster, s3_server, tmp_path_factory):
    """helm install of the chart; the operator as its ServiceAccount; Secrets, data, a kwok
    g5.12xlarge node for the instanceType example; Kueue queues with 4 GPUs of quota."""
    work = tmp_path_factory.mktemp("e2e")
    for namespace in (PLATFORM, TEAM):
        ensure_namespace(cluster, namespace)
    install_chart(cluster)
    seed_storage(s3_server)
    secrets = [storage_secret("model-store", ns, s3_server) for ns in (PLATFORM, TEAM)]
    secrets += [storage_secret(n, TEAM, s3_server) for n in ("data-store", "artifact-store")]
    cluster.create(secrets + [g5_node(), *kueue_queues(), priority_class("low")])

    operator = Operator(cluster, work).start()  # the chart's own ConfigMap is the config file
    try:
        yield cluster, operator.log
    finally:
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


def test_hub_and_two_node_gpu_job_run_on_the_real_training_operator(installed):
    plane, log = installed
    kubectl(plane, "apply", "-f", str(EXAMPLES / "modelhub.yaml"))
    for hub in ("curated", "public"):  # every model's files are there, references resolved
        wait_for(f"hub {hub} Ready", lambda h=hub: hub_ready(plane, PLATFORM, h))
    kubectl(plane, "apply", "-n", TEAM, "-f", str(EXAMPLES / "finetunejob-domain-adaptation.yaml"))
    job = wait_for("the PyTorchJob", lambda: get(plane, "pytorchjob", "-n", TEAM, "sec-filings"))
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    pods = wait_for("2 pods bound to GPU nodes", lambda: bound_pods(plane, "sec-filings", 2))
    by_role = {p["metadata"]["labels"]["training.kubeflow.org/replica-type"]: p for p in pods}
    assert set(by_role) == {"master", "worker"}
    for pod in pods:
        assert pod["spec"]["nodeName"] in ("gpu-0", "gpu-1", "g5-0")
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        print(pod["metadata"]["name"], json.dumps(env, sort_keys=True))
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4", env
        # The Training Operator's WORLD_SIZE counts processes (nodes x nprocPerNode), not pods.
        assert env["MASTER_ADDR"] == "sec-filings-master-0" and env["WORLD_SIZE"] == "8", env
        assert pod["spec"]["restartPolicy"] == "Never"  # ExitCode: the operator recreates
    assert wait_for("Succeeded", lambda: phase(plane, "sec-filings") == "Succeeded", 180)
    assert "Forbidden" not in log.read_text(), "the chart's RBAC lacks a verb the operator uses"

    kubectl(plane, "delete", "ftj", "-n", TEAM, "sec-filings", "--wait=true")
    gone = lambda: (not get(plane, "pytorchjob", "-n", TEAM, "sec-filings")  # noqa: E731
                    and not get(plane, "configmap", "-n", TEAM, "sec-filings-trainer-config")
                    and not bound_pods(plane, "sec-filings", 0, at_least=1))  # fmt: skip
    assert wait_for("garbage collection of the children", gone, 60)


def bound_pods(plane, job: str, count: int, at_least: int | None = None) -> list[dict] | None:
    found = get(plane, "pods", "-n", TEAM, "-l", f"training.kubeflow.org/job-name={job}")
    pods = [p for p in (found or {}).get("items", []) if p["spec"].get("nodeName")]
    if at_least is not None:
        return pods if len(pods) >= at_least else None
    return pods if len(pods) == count else None


def test_kueue_admits_a_queued_job_only_when_its_gang_fits(installed):
    plane, _ = installed
    kubectl(plane, "apply", "-f", str(EXAMPLES / "modelhub.yaml"))
    example = yaml.safe_load((EXAMPLES / "finetunejob-instruction.yaml").read_text())
    too_big = json.loads(json.dumps(example))
    too_big["metadata"]["name"] = "support-bot-large"
    too_big["spec"]["resources"]["nodes"] = 2  # 2 x 4 GPUs: over the queue's 4
    too_big["spec"]["output"]["uri"] = "s3://artifacts/support-bot-large/"
    kubectl(plane, "apply", "-f", "-", stdin=yaml.safe_dump(too_big))
    kubectl(plane, "apply", "-f", str(EXAMPLES / "finetunejob-instruction.yaml"))

    assert wait_for("the fitting job admitted and run",
                    lambda: phase(plane, "support-bot") == "Succeeded", 180)  # fmt: skip
    large = get(plane, "pytorchjob", "-n", TEAM, "support-bot-large")
    assert large["spec"]["runPolicy"]["suspend"] is True, "over quota, yet admitted"
    assert phase(plane, "support-bot-large") == "Queued"
    assert bound_pods(plane, "support-bot-large", 0) == []
    workloads = get(plane, "workloads.kueue.x-k8s.io", "-n", TEAM)["items"]
    admitted = {w["metadata"]["ownerReferences"][0]["name"]: bool(
        (w.get("status") or {}).get("admission")) for w in workloads}  # fmt: skip
    assert admitted == {"support-bot": True, "support-bot-large": False}, admitted
