"""kubetune end to end on the real control plane: the chart installed by the real helm, the
operator authenticated as the chart's ServiceAccount (its least-privilege RBAC enforced by the
API server), the examples applied with kubectl, the real Training Operator turning PyTorchJobs
into pods that the scheduler binds to kwok GPU nodes, Kueue admitting queued jobs by quota, and
garbage collection when a FineTuneJob is deleted. S3 is moto."""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from tests.chart.helm import HelmUnavailable, helm_binary
from tests.support.processes import free_port
from tests.support.s3 import s3_server_fixture  # noqa: F401 (fixture, requested by name)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RELEASE, SYSTEM, PLATFORM, TEAM = "kubetune", "kubetune-system", "ml-platform", "team-a"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def kubectl(plane, *args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={plane.kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def get(plane, *args: str) -> dict | None:
    text = kubectl(plane, "get", "-o", "json", *args, check=False)
    return json.loads(text) if text.strip() else None


def wait_for(what: str, probe, timeout: float = 120, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def phase(plane, name: str) -> str | None:
    found = get(plane, "ftj", "-n", TEAM, name)
    return ((found or {}).get("status") or {}).get("phase")


def storage_secret(name: str, namespace: str, endpoint: str) -> dict:
    data = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


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


def token_kubeconfig(plane, token: str, path: Path) -> Path:
    """The admin kubeconfig's server and CA, with the ServiceAccount's token as the user."""
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(admin))
    return path


@pytest.fixture(scope="module")
def installed(cluster, s3_server, tmp_path_factory):
    """helm install of the chart; the operator as its ServiceAccount; Secrets, data, a kwok
    g5.12xlarge node for the instanceType example; Kueue queues with 4 GPUs of quota."""
    try:
        helm = helm_binary()
    except HelmUnavailable as err:
        pytest.skip(str(err))
    work = tmp_path_factory.mktemp("e2e")
    for namespace in (PLATFORM, TEAM):
        kubectl(cluster, "create", "namespace", namespace)
    done = subprocess.run(
        [str(helm), "install", RELEASE, str(REPO / "charts" / "kubetune"), "--namespace", SYSTEM,
         "--create-namespace", "--kubeconfig", str(cluster.kubeconfig), "--set", "replicaCount=1"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seed_storage(s3_server)
    secrets = [storage_secret("model-store", ns, s3_server) for ns in (PLATFORM, TEAM)]
    secrets += [storage_secret(n, TEAM, s3_server) for n in ("data-store", "artifact-store")]
    cluster.create(secrets + [g5_node(), *kueue_queues(), priority_class("low")])

    token = kubectl(cluster, "create", "token", RELEASE, "-n", SYSTEM, "--duration=2h").strip()
    kubeconfig = token_kubeconfig(cluster, token, work / "operator.kubeconfig")
    configmap = work / "operator-config.yaml"  # the chart's own ConfigMap is the config file
    configmap.write_text(kubectl(cluster, "get", "configmap", f"{RELEASE}-config", "-n", SYSTEM,
                                 "-o", "yaml"))  # fmt: skip
    log = work / "operator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG"))}
    operator = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli.main", "operator", "--config", str(configmap),
         "--metrics-port", str(free_port()), "--health-port", str(free_port())],
        env={**env, "KUBECONFIG": str(kubeconfig)}, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield cluster, log
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
        print(f"\noperator log: {log}")


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
        wait_for(f"hub {hub} Ready", lambda h=hub: hub_ready(plane, h))
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


def hub_ready(plane, name: str) -> bool:
    conditions = ((get(plane, "mhub", "-n", PLATFORM, name) or {}).get("status") or {}).get(
        "conditions"
    ) or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


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
