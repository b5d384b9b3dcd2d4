"""kubetune end to end with the trainer really training, once per backend: the chart's operator
turns a FineTuneJob into a TrainJob (the real Kubeflow Trainer and JobSet make a Job of two
indexed pods) or a PyTorchJob (the real Training Operator makes a Master and a Worker pod), the
scheduler binds them to a node whose kubelet (tests/cluster/kubelet.py) runs their container as
local processes (the image's entrypoint, with the env the controller wrote and the Secrets'
keys), the two torchrun "nodes" train a tiny Llama over gloo against moto S3, and the operator
reads the trainer's metrics back into the FineTuneJob's status."""

import json
import time
import uuid
from collections import Counter

import boto3
import pytest

from kubetune.config import load_config
from tests.cluster.e2e_support import (
    Operator,
    ensure_namespace,
    get,
    hub_ready,
    install_chart,
    kubectl,
    storage_secret,
    trainer_image,
    wait_for,
)
from tests.cluster.images import Image
from tests.cluster.kubelet import LocalKubelet
from tests.support.s3 import s3_server_fixture  # noqa: F401 (fixture, requested by name)
from tests.support.training import make_job

pytestmark = pytest.mark.cluster
NS, NODE = "real-training", "local-0"
# A CPU instance profile of the operator's config: its nodeSelector is what brings the pods to
# the node the local kubelet runs (kwok's untainted cpu-0 would take CPU pods otherwise).
INSTANCE_TYPE = "local.cpu"
PROFILE = {"accelerator": "none", "cpu": "1", "memory": "4Gi",
           "nodeSelector": {"node.kubernetes.io/instance-type": INSTANCE_TYPE}}  # fmt: skip
INIT_IMAGE = "alpine:3.10"  # the Training Operator's init container (waits for the master)
# As tests/trainer/test_distributed.py: no dropout, checkpoints at epoch ends only.
HYPERPARAMETERS = {"instruction_tuned": True, "epoch": 2, "learning_rate": 2e-3,
                   "per_device_train_batch_size": 4, "max_input_length": 32,
                   "lora_dropout": 0.0, "checkpoint_interval_steps": 0}  # fmt: skip


@pytest.fixture(scope="module", params=["TrainJob", "PyTorchJob"])
def stack(request, cluster, s3_server, tmp_path_factory):
    """The chart, the operator (its config with the local.cpu profile and a 2 s refresh, and the
    backend), the local node and its kubelet, a hub with the tiny model, data and Secrets in
    moto. Its jobs go when the module's run with this backend ends."""
    kind = request.param
    work = tmp_path_factory.mktemp(f"real-training-{kind.lower()}")
    ensure_namespace(cluster, NS)
    install_chart(cluster)
    buckets = upload(make_job(work / "job", samples=96), s3_server)
    secrets = [storage_secret(n, NS, s3_server)
               for n in ("model-store", "data-store", "artifact-store")]  # fmt: skip
    kubectl(cluster, "apply", "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}))  # fmt: skip
    setting = {"TrainJob": "trainjob", "PyTorchJob": "pytorchjob"}[kind]
    operator = Operator(cluster, work, "--log-level", "INFO", progressIntervalSeconds=2,
                        instanceProfiles={INSTANCE_TYPE: PROFILE},
                        trainingBackend=setting)  # fmt: skip
    image = load_config(operator.config).images.cpu
    kubelet = LocalKubelet(cluster, NODE, work / "kubelet",
                           images={image: trainer_image(), INIT_IMAGE: Image()},
                           labels={"node.kubernetes.io/instance-type": INSTANCE_TYPE})  # fmt: skip
    kubelet.start()
    operator.start()
    try:
        kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(hub(buckets["models"])))
        wait_for("hub Ready", lambda: hub_ready(cluster, NS, "tiny"), 60)
        yield cluster, kubelet, buckets, kind
    finally:
        kubectl(cluster, "delete", "ftj", "--all", "-n", NS, "--wait=true", "--timeout=60s")
        operator.stop()
        kubelet.stop()
        print(f"\noperator log: {operator.log}\nkubelet folder: {kubelet.workdir}")


def upload(root, endpoint: str) -> dict[str, str]:
    """The tiny model and data (tests/support/training.py) into fresh buckets; a second train
    prefix holds the same data with one broken line."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    suffix = uuid.uuid4().hex[:8]
    buckets = {kind: f"{kind}-{suffix}" for kind in ("models", "data", "artifacts")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    for path in (root / "model").iterdir():
        s3.upload_file(str(path), buckets["models"], f"tiny/{path.name}")
    for path in (root / "data").iterdir():
        s3.upload_file(str(path), buckets["data"], f"good/{path.name}")
    lines = (root / "data" / "train.jsonl").read_text().splitlines(keepends=True)
    broken = "".join(lines[:7]) + '{"instruction": "describe", "response": \n' + "".join(lines[7:])
    s3.put_object(Bucket=buckets["data"], Key="bad/train.jsonl", Body=broken.encode())
    s3.upload_file(str(root / "data" / "template.json"), buckets["data"], "bad/template.json")
    return buckets


def hub(models: str) -> dict:
    model = {"modelId": "tiny-llama", "source": f"s3://{models}/tiny/"}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
            "metadata": {"name": "tiny", "namespace": NS},
            "spec": {"storage": {"secretRef": {"name": "model-store"}},
                     "models": [model]}}  # fmt: skip


def job(name: str, data: str, buckets: dict[str, str]) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"hubRef": {"name": "tiny", "namespace": NS}, "modelId": "tiny-llama"},
            "data": {"train": f"s3://{buckets['data']}/{data}/",
                     "secretRef": {"name": "data-store"}},
            "hyperparameters": HYPERPARAMETERS,
            "resources": {"instanceType": INSTANCE_TYPE, "nodes": 2},
            "output": {"uri": f"s3://{buckets['artifacts']}/{name}/",
                       "secretRef": {"name": "artifact-store"}},
        },
    }  # fmt: skip


def finished(plane, name: str) -> dict | None:
    found = get(plane, "ftj", "-n", NS, name) or {}
    return found if (found.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None


def pods_of(plane, name: str) -> list[dict]:
    found = get(plane, "pods", "-n", NS, "-l", f"kubetune.io/finetunejob={name}")
    return (found or {}).get("items") or []


def by_role(pods: list[dict]) -> dict[str, dict]:
    """master/worker: a PyTorchJob's replica types, or a TrainJob's node index 0 and 1."""
    def role(pod):
        labels = pod["metadata"]["labels"]
        if "training.kubeflow.org/replica-type" in labels:
            return labels["training.kubeflow.org/replica-type"]
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        return {"0": "master", "1": "worker"}[index]

    return {role(p): p for p in pods}


CONTAINER = {"PyTorchJob": "pytorch", "TrainJob": "node"}


def wait_to_finish(plane, kubelet, kind: str, name: str, timeout: float) -> dict:
    """The finished FineTuneJob; on a timeout, the failure says where each part had got to."""
    try:
        return wait_for("the FineTuneJob to finish", lambda: finished(plane, name), timeout, 1)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{story(plane, kubelet, kind, name)}") from None


def story(plane, kubelet: LocalKubelet, kind: str, name: str, lines: int = 25) -> str:
    """The FineTuneJob's status, its training job's conditions, and each pod's phase,
    container states and last log lines, as the kubelet ran them."""
    told = [f"FineTuneJob status: {(get(plane, 'ftj', '-n', NS, name) or {}).get('status')}"]
    training_job = get(plane, kind.lower(), "-n", NS, name) or {}
    told.append(f"{kind} status: {training_job.get('status')}")
    for pod in pods_of(plane, name):
        pod_name, status = pod["metadata"]["name"], pod.get("status") or {}
        containers = [*(status.get("initContainerStatuses") or []),
                      *(status.get("containerStatuses") or [])]  # fmt: skip
        states = [(c["name"], c.get("state")) for c in containers]
        told.append(f"pod {pod_name}: {status.get('phase')} {states}")
        for container in ("init-pytorch", CONTAINER[kind]):
            log = kubelet.log(NS, pod_name, container).splitlines()[-lines:]
            if log:
                told.append(f"--- {pod_name}/{container}, last lines:\n" + "\n".join(log))
    runs = [(r.name, r.phase) for r in list(kubelet.runs.values()) if r.name.startswith(name)]
    told.append(f"kubelet runs: {runs}")
    return "\n".join(told)


def test_two_pods_train_the_tiny_model_and_the_status_shows_its_metrics(stack):
    plane, kubelet, buckets, kind = stack
    plane.create([job("tiny-tune", "good", buckets)])
    done = wait_to_finish(plane, kubelet, kind, "tiny-tune", 300)
    listed = pods_of(plane, "tiny-tune")
    pods = by_role(listed)
    logs = {role: kubelet.log(NS, p["metadata"]["name"], CONTAINER[kind])
            for role, p in pods.items()}  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Succeeded", (status, logs["master"][-3000:])
    assert status["trainingJob"] == {"kind": kind, "name": "tiny-tune"}

    assert len(listed) == 2 and set(pods) == {"master", "worker"}
    assert sorted(starts(kubelet, "tiny-tune").values()) == [1, 1]  # no pod started twice
    for role, pod in pods.items():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        print(role, json.dumps(env, sort_keys=True))
        assert env["PET_NNODES"] == "2"
        if kind == "PyTorchJob":
            assert env["MASTER_ADDR"] == "tiny-tune-master-0"
            assert env["PET_NODE_RANK"] == {"master": "0", "worker": "1"}[role]
        else:  # Trainer: PET_* only, the rank from the Job's completion index
            assert "MASTER_ADDR" not in env
            assert env["PET_MASTER_ADDR"] == "tiny-tune-node-0-0.tiny-tune"
            assert env["PET_MASTER_PORT"] == "29500" and env["PET_NODE_RANK"] is None
        assert pod["spec"]["nodeName"] == NODE
        (container,) = pod["status"]["containerStatuses"]
        terminated = container["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed"), terminated
        assert pod["status"]["phase"] == "Succeeded"
    if kind == "PyTorchJob":
        worker_init = pods["worker"]["status"]["initContainerStatuses"][0]
        assert worker_init["state"]["terminated"]["exitCode"] == 0  # nslookup found the master
    assert "rank 0 of 2 joined (gloo)" in logs["master"], logs["master"][-3000:]
    assert "rank 1 of 2 joined (gloo)" in logs["worker"], logs["worker"][-3000:]

    s3 = boto3.client("s3", endpoint_url=kubelet.secret(NS, "artifact-store")["AWS_ENDPOINT_URL"],
                      region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")  # fmt: skip
    prefix = "tiny-tune/"
    keys = {o["Key"][len(prefix):] for o in s3.list_objects_v2(
        Bucket=buckets["artifacts"], Prefix=prefix)["Contents"]}  # fmt: skip
    assert {"MANIFEST.json", "metrics.json", "adapter/adapter_model.safetensors"} <= keys, keys
    metrics = json.loads(s3.get_object(Bucket=buckets["artifacts"],
                                       Key=prefix + "metrics.json")["Body"].read())  # fmt: skip
    assert metrics["world_size"] == 2
    losses = [epoch["eval_loss"] for epoch in metrics["epochs"]]
    print("eval loss per epoch", losses, "metrics in status", status["metrics"])
    assert losses[-1] < losses[0], losses
    assert status["metrics"]["evalLoss"] == pytest.approx(metrics["eval_loss"])
    assert {"trainLoss", "evalLoss", "evalPerplexity", "tokensPerSecond"} <= set(status["metrics"])
    uri = f"s3://{buckets['artifacts']}/{prefix}"
    assert status["artifacts"]["uri"] == uri and status["artifacts"]["adapter"] == uri + "adapter/"
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    print("Succeeded condition:", succeeded)
    assert succeeded["status"] == "True"


def test_a_broken_data_line_fails_the_job_at_once_with_the_trainers_message(stack):
    plane, kubelet, buckets, kind = stack
    plane.create([job("tiny-bad", "bad", buckets)])
    done = wait_to_finish(plane, kubelet, kind, "tiny-bad", 300)
    pods = pods_of(plane, "tiny-bad")
    logs = {p["metadata"]["name"]: kubelet.log(NS, p["metadata"]["name"], CONTAINER[kind])
            for p in pods}  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Failed", (status, logs)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    training_job = get(plane, kind.lower(), "-n", NS, "tiny-bad")
    print("FineTuneJob Failed condition:", failed)
    print(f"{kind} conditions:", training_job["status"]["conditions"])
    for pod in pods:
        print(pod["metadata"]["name"], pod["status"]["phase"],
              [c["state"] for c in pod["status"].get("containerStatuses") or []])  # fmt: skip
    assert failed["reason"] == "InvalidInput", failed
    assert "train.jsonl" in failed["message"] and "\n" not in failed["message"], failed
    codes = {c["state"]["terminated"]["exitCode"] for p in pods
             for c in p["status"].get("containerStatuses") or [] if "terminated" in c["state"]}
    assert 2 in codes, codes
    # Exit 2 fails the job at once (PyTorchJob: restartPolicy ExitCode; TrainJob: the runtime's
    # podFailurePolicy FailJob): no pod was made again.
    time.sleep(3)
    assert sorted(starts(kubelet, "tiny-bad").values()) == [1, 1]
    if kind == "PyTorchJob":  # a recreated pod keeps its name: counted in its events
        listed = kubectl(plane, "get", "events", "-n", NS, "--field-selector",
                         "involvedObject.name=tiny-bad", "-o", "json")  # fmt: skip
        events = json.loads(listed)["items"]
        print("PyTorchJob events:", [(e["reason"], e["message"]) for e in events])
        created = [e.get("count", 1) for e in events if e["reason"] == "SuccessfulCreatePod"]
        assert sum(created) == 2, events  # a repeated event is counted, not listed again
    else:  # a new pod has a new name: the Job says how many it made
        job_status = get(plane, "job", "-n", NS, "tiny-bad-node-0")["status"]
        print("Job status:", job_status)
        assert job_status.get("failed", 0) + job_status.get("succeeded", 0) <= 2, job_status


def starts(kubelet: LocalKubelet, job_name: str) -> Counter:
    """How often the kubelet started each pod of the job (by pod name)."""
    return Counter(run.name for run in list(kubelet.runs.values())
                   if run.name.startswith(f"{job_name}-"))  # fmt: skip
