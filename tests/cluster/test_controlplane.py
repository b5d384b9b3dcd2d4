"""Smoke tests of the test control plane, through the real kubectl: our CRDs, kwok GPU nodes, a
batch Job and a PyTorchJob run by the real Training Operator, garbage collection, and RBAC with
service-account tokens on the API server alone."""

import json
import shutil
import subprocess
import time

import pytest
import yaml

from tests.cluster.fixtures import OUR_CRDS

pytestmark = pytest.mark.cluster
KUBECTL = shutil.which("kubectl")

PYTORCHJOB = """
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: smoke, namespace: smoke}
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
          containers:
          - name: pytorch
            image: busybox
            command: ["true"]
            resources: {limits: {nvidia.com/gpu: 1}}
"""
JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: smoke, namespace: smoke}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox, command: ["true"]}]
"""


def kubectl(plane, *args: str, stdin: str | None = None) -> str:
    if not KUBECTL:
        pytest.skip("needs kubectl on PATH")
    result = subprocess.run([KUBECTL, f"--kubeconfig={plane.kubeconfig}", *args], input=stdin,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def get(plane, *args: str) -> dict:
    return json.loads(kubectl(plane, "get", "-o", "json", *args))


@pytest.fixture(scope="module")
def namespace(cluster):
    kubectl(cluster, "create", "namespace", "smoke")
    yield "smoke"
    kubectl(cluster, "delete", "namespace", "smoke", "--wait=false")


def test_our_crds_apply_and_are_established(cluster):
    kubectl(cluster, "apply", "--server-side", *(f"--filename={path}" for path in OUR_CRDS))
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in OUR_CRDS]
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=30s",
            *(f"crd/{name}" for name in names))


def test_kwok_gpu_nodes_are_ready(cluster):
    nodes = get(cluster, "nodes")["items"]
    gpu = [n for n in nodes if n["status"]["allocatable"].get("nvidia.com/gpu") == "8"]
    assert len(gpu) == 2
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_batch_job_is_scheduled_and_completes(cluster, namespace):
    kubectl(cluster, "apply", "-f", "-", stdin=JOB)
    kubectl(cluster, "wait", "--for=condition=Complete", "--timeout=60s", "-n", namespace,
            "job/smoke")
    pod = get(cluster, "pods", "-n", namespace, "-l", "job-name=smoke")["items"][0]
    assert pod["spec"]["nodeName"] == "cpu-0"  # the one node without a taint
    assert pod["status"]["phase"] == "Succeeded"


def test_pytorchjob_runs_on_a_gpu_node_succeeds_and_is_garbage_collected(cluster, namespace):
    kubectl(cluster, "apply", "-f", "-", stdin=PYTORCHJOB)
    kubectl(cluster, "wait", "--for=condition=Succeeded", "--timeout=90s", "-n", namespace,
            "pytorchjob/smoke")
    selector = "training.kubeflow.org/job-name=smoke"
    pods = get(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    assert len(pods) == 1
    pod = pods[0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"] == "1" and env["RANK"] == "0"
    assert env["MASTER_ADDR"] == "smoke-master-0"
    assert pod["spec"]["nodeName"] in ("gpu-0", "gpu-1")
    assert pod["status"]["phase"] == "Succeeded"

    kubectl(cluster, "delete", "-n", namespace, "pytorchjob/smoke")
    deadline = time.monotonic() + 60  # the garbage collector deletes them, kwok lets them go
    while get(cluster, "pods", "-n", namespace, "-l", selector)["items"]:
        assert time.monotonic() < deadline, "pods of the deleted PyTorchJob still there"
        time.sleep(0.5)


def test_pytorchjob_whose_pod_exits_1_fails(cluster, namespace):
    # Our kwok Stage (stages/pod-complete.yaml) reads the exit code from the pod.
    failing = (PYTORCHJOB.replace("name: smoke", "name: failing")
               .replace("restartPolicy: OnFailure", "restartPolicy: Never")
               .replace("        spec:\n", "        metadata: {annotations: "
                        "{kubetune.test/exit-code: '1'}}\n        spec:\n"))
    kubectl(cluster, "apply", "-f", "-", stdin=failing)
    kubectl(cluster, "wait", "--for=condition=Failed", "--timeout=90s", "-n", namespace,
            "pytorchjob/failing")
    pod = get(cluster, "pod", "-n", namespace, "failing-master-0")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_training_operator_webhook_rejects_a_pytorchjob_without_a_pytorch_container(cluster,
                                                                                  namespace):
    invalid = PYTORCHJOB.replace("name: pytorch", "name: main").replace("name: smoke", "name: bad")
    result = subprocess.run([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", "apply", "-f", "-"],
                            input=invalid, capture_output=True, text=True)
    assert "denied the request" in result.stderr and "pytorch" in result.stderr


def test_kueue_webhook_suspends_a_queued_job_that_no_queue_admits(cluster, namespace):
    queued = JOB.replace("name: smoke,", "name: queued, labels: {kueue.x-k8s.io/queue-name: none},")
    kubectl(cluster, "apply", "-f", "-", stdin=queued)
    job = get(cluster, "job", "-n", namespace, "queued")
    assert job["spec"]["suspend"] is True  # set at admission by Kueue's mutating webhook
    workload_owner = "kueue.x-k8s.io/job-uid=" + job["metadata"]["uid"]
    deadline = time.monotonic() + 30  # Kueue's job reconciler creates the Workload
    while not get(cluster, "workloads.kueue.x-k8s.io", "-n", namespace, "-l", workload_owner)[
            "items"]:
        assert time.monotonic() < deadline, "Kueue created no Workload for the queued Job"
        time.sleep(0.5)


def test_service_account_tokens_and_rbac_on_the_api_server_alone(kube_apiserver):
    plane = kube_apiserver
    kubectl(plane, "create", "serviceaccount", "reader", "-n", "default")
    token = kubectl(plane, "create", "token", "reader", "-n", "default").strip()
    as_reader = ["--token", token, "-n", "default"]
    denied = subprocess.run([KUBECTL, f"--kubeconfig={plane.kubeconfig}", *as_reader,
                             "get", "configmaps"], capture_output=True, text=True)
    assert "Forbidden" in denied.stderr
    kubectl(plane, "create", "role", "read-cm", "--verb=list", "--resource=configmaps",
            "-n", "default")
    kubectl(plane, "create", "rolebinding", "reader", "--role=read-cm",
            "--serviceaccount=default:reader", "-n", "default")
    kubectl(plane, *as_reader, "get", "configmaps")
