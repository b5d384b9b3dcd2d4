"""The Trainer's TrainJobStatus gate (alpha) on a plane of its own: the Trainer gives each
trainer container a status URL, a CA and a projected token (KUBEFLOW_TRAINER_SERVER_URL, _CA_CERT,
_TOKEN); a pod run by the local kubelet posts its progress there, and the Trainer writes it into
the TrainJob's status.trainerStatus."""

import json
import sys
import textwrap

import pytest

from tests.cluster import addons_trainer
from tests.cluster.e2e_support import ensure_namespace, get, kubectl, wait_for
from tests.cluster.images import Image
from tests.cluster.kubelet import LocalKubelet

pytestmark = pytest.mark.cluster
NS, NODE = "trainjob-status", "local-0"
COMPONENTS = ("controller-manager", "scheduler", "jobset", "trainer")  # pods: the local node's
RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime",
    "metadata": {"name": "torch", "namespace": NS},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [{
        "name": "node",
        "template": {
            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "node", "image": "python", "command": ["true"]}]}}}}}]}}},
}  # fmt: skip
# What a trainer does with the three variables: POST an UpdateTrainJobStatusRequest.
REPORT = textwrap.dedent("""
    import json, os, ssl, urllib.request
    env = {k: v for k, v in os.environ.items() if k.startswith("KUBEFLOW_TRAINER_")}
    print(json.dumps(env), flush=True)
    token = open(env["KUBEFLOW_TRAINER_SERVER_TOKEN"]).read()
    body = {"trainerStatus": {"progressPercentage": 40, "estimatedRemainingSeconds": 90,
                              "metrics": [{"name": "loss", "value": "1.25"}],
                              "lastUpdatedTime": "2026-01-01T00:00:00Z"}}
    request = urllib.request.Request(env["KUBEFLOW_TRAINER_SERVER_URL"], method="POST",
        data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"})
    tls = ssl.create_default_context(cafile=env["KUBEFLOW_TRAINER_SERVER_CA_CERT"])
    with urllib.request.urlopen(request, context=tls, timeout=10) as answer:
        print(answer.status, answer.read().decode(), flush=True)
""")


@pytest.fixture(scope="module")
def plane(request):
    if reason := addons_trainer.private_mounts():
        pytest.skip(f"the TrainJobStatus gate needs a mount namespace here: {reason}")
    from tests.cluster.controlplane import ControlPlane

    with ControlPlane(components=COMPONENTS, trainer_feature_gates={"TrainJobStatus": True},
                      log=print) as plane:
        print(f"\nTrainJobStatus plane started: {plane.startup_seconds}")
        yield plane


def run_to_complete(plane, tmp_path, name: str, script: str) -> tuple[dict, dict, str]:
    """A one-node TrainJob of RUNTIME running `script` in a pod of the local kubelet, until it is
    Complete: (the TrainJob, its pod, the pod's output)."""
    ensure_namespace(plane, NS)
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(RUNTIME))
    kubelet = LocalKubelet(plane, NODE, tmp_path / "kubelet", images={"python": Image()})
    kubelet.start()
    try:
        job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
               "metadata": {"name": name, "namespace": NS},
               "spec": {"runtimeRef": {"name": "torch", "kind": "TrainingRuntime"},
                        "trainer": {"numNodes": 1, "command": [sys.executable, "-c", script]}}}
        kubectl(plane, "apply", "-f", "-", stdin=json.dumps(job))
        done = wait_for(f"TrainJob {name} Complete", lambda: (
            (tj := get(plane, "trainjob", "-n", NS, name)) and any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in tj.get("status", {}).get("conditions") or []) and tj), 120)
        pod = get(plane, "pods", "-n", NS, "-l", f"jobset.sigs.k8s.io/jobset-name={name}")[
            "items"][0]
        return done, pod, kubelet.log(NS, pod["metadata"]["name"], "node")
    finally:
        kubelet.stop()


def test_a_pod_reports_progress_into_the_trainjob_status(plane, tmp_path):
    done, pod, output = run_to_complete(plane, tmp_path, "reports", REPORT)
    container = pod["spec"]["containers"][0]
    print("\n--- pod reports: env, mounts, volumes the gate added\n" + json.dumps({
        "env": [e for e in container["env"] if e["name"].startswith("KUBEFLOW_")],
        "volumeMounts": container.get("volumeMounts"),
        "volumes": [v for v in pod["spec"]["volumes"] if v["name"] == "kubeflow-trainer-token"],
    }, indent=1))
    print(f"--- the pod's output (env as the local kubelet gave it; the answer)\n{output}")
    print("--- TrainJob reports: status\n" + json.dumps(done["status"], indent=1))
    assert done["status"]["trainerStatus"]["progressPercentage"] == 40
    assert done["status"]["trainerStatus"]["metrics"] == [{"name": "loss", "value": "1.25"}]
    assert get(plane, "configmap", "-n", NS, "reports-tls-config") is not None


# The bundled trainer's own reporter (kubetune_trainer/trainer_status.py), from the env as the
# Trainer and the local kubelet gave it: what rank 0 sends while it trains.
OURS = textwrap.dedent("""
    from kubetune.api.v1alpha1 import ProgressReport
    from kubetune_trainer.runtime import Runtime
    from kubetune_trainer.trainer_status import StatusPusher
    pusher = StatusPusher(Runtime.from_env().trainer_status)
    pusher.push(ProgressReport(step=30, total_steps=100, percent=30, eta_seconds=70,
                               train_loss=1.5, eval_loss=None, tokens_per_second=812.5))
    pusher.push(ProgressReport(step=40, total_steps=100, percent=40, eta_seconds=60,
                               train_loss=1.25, eval_loss=1.75, tokens_per_second=800.0))
    pusher.close()
    print("pushed", flush=True)
""")


def test_the_trainers_reporter_pushes_progress_the_trainer_accepts(plane, tmp_path):
    done, _, output = run_to_complete(plane, tmp_path, "ours", OURS)
    print("--- TrainJob ours: trainerStatus\n" + json.dumps(done["status"].get("trainerStatus")))
    assert "pushed" in output and "not pushed" not in output, output
    status = done["status"]["trainerStatus"]
    assert status["progressPercentage"] in (30, 40)  # the newest state wins; the first may go
    if status["progressPercentage"] == 40:
        assert {"name": "eval_loss", "value": "1.75"} in status["metrics"], status
    assert {m["name"] for m in status["metrics"]} >= {"train_loss", "tokens_per_second"}
