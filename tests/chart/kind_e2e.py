"""End to end on a local kind cluster, for machines with Docker, kind and kubectl:

    make kind-e2e          # or: .venv/bin/python -m tests.chart.kind_e2e

1. a kind cluster from kind-config.yaml (KIND_CLUSTER, default kubetune-e2e);
2. the operator and trainer images built from this checkout and loaded into it
   (TRAINER_IMAGE=<ref> uses a trainer image from a registry instead: it is large);
3. Kubeflow Training Operator v1.9 (its standalone overlay);
4. an S3 server in the cluster (moto, the same server as the unit tests) with the quick start's
   small model and data, and a Secret that points at it;
5. the chart (charts/kubetune) with those images and CPU-sized trainer pods;
6. a ModelHub and a CPU FineTuneJob: waits for the hub to be Ready and the job to succeed, then
   checks the artifacts in S3. On failure it prints the objects, events and logs.

The cluster is deleted at the end unless KEEP_CLUSTER=1. Nothing here runs on machines without
Docker: tests/chart/test_kind_e2e.py is marked `kind` and skipped there.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import boto3
import yaml

from tests.chart.helm import helm_binary

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER", "kubetune-e2e")
CONTEXT = f"kind-{CLUSTER}"
TRAINING_OPERATOR = (
    "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.3"
)
OPERATOR_IMAGE = "kubetune-operator:e2e"
NAMESPACE = "kubetune-e2e"  # the S3 server, the hub and the job
SYSTEM = "kubetune-system"  # the operator
S3 = f"http://s3.{NAMESPACE}.svc.cluster.local:5000"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "e2e", "AWS_SECRET_ACCESS_KEY": "e2e-secret"}
JOB_TIMEOUT = int(os.environ.get("JOB_TIMEOUT", "1800"))  # seconds; CPU training, a small model


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*command: str, input: str | None = None, capture: bool = False) -> str:
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, input=input, text=True, capture_output=capture, check=False)
    if done.returncode != 0:
        if capture:
            print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    return done.stdout if capture else ""


def kubectl(*args: str, **kwargs) -> str:
    return run("kubectl", "--context", CONTEXT, *args, **kwargs)


def apply(*objects: dict) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


# --- cluster and images -----------------------------------------------------------------------


def create_cluster() -> None:
    step(f"kind cluster {CLUSTER}")
    if CLUSTER in run("kind", "get", "clusters", capture=True).split():
        print("exists already: reused")
        return
    run("kind", "create", "cluster", "--name", CLUSTER, "--config", str(REPO / "kind-config.yaml"))


def build_images() -> str:
    """Builds and loads the images; returns the trainer image reference."""
    step("images")
    run("docker", "build", "-f", "operator-image/Dockerfile", "-t", OPERATOR_IMAGE, str(REPO))
    run("kind", "load", "docker-image", OPERATOR_IMAGE, "--name", CLUSTER)
    trainer = os.environ.get("TRAINER_IMAGE")
    if trainer:
        return trainer  # pulled by the node
    trainer = "kubetune-trainer:e2e"
    run("docker", "build", "-f", "trainer-image/Dockerfile", "-t", trainer, str(REPO))
    run("kind", "load", "docker-image", trainer, "--name", CLUSTER)
    return trainer


def install_training_operator() -> None:
    step("Kubeflow Training Operator v1.9")
    kubectl("apply", "--server-side", "--force-conflicts", "-k", TRAINING_OPERATOR)
    kubectl("-n", "kubeflow", "rollout", "status", "deployment/training-operator", "--timeout=5m")


# --- S3 ---------------------------------------------------------------------------------------


def moto_version() -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.startswith("moto=="):
            return line.split("==")[1]
    raise SystemExit("constraints.txt pins no moto")


def install_s3() -> None:
    step("S3 server (moto) in the cluster")
    labels = {"app": "s3"}
    apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "s3", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "moto",
                                "image": f"motoserver/moto:{moto_version()}",
                                "ports": [{"containerPort": 5000}],
                                "readinessProbe": {"tcpSocket": {"port": 5000}},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s3", "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": NAMESPACE},
            "stringData": {
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": S3,
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    kubectl("-n", NAMESPACE, "rollout", "status", "deployment/s3", "--timeout=5m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def s3_client():
    """boto3 on the in-cluster server, through `kubectl port-forward`."""
    port = free_port()
    command = ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "port-forward"]
    forward = subprocess.Popen([*command, "svc/s3", f"{port}:5000"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(60):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        yield boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def upload_model_and_data() -> None:
    step("the quick start's model and data, into S3")
    with tempfile.TemporaryDirectory() as tmp:
        run(sys.executable, "-m", "kubetune.demo", "--dir", tmp)
        with s3_client() as s3:
            for bucket in ("models", "datasets", "artifacts"):
                s3.create_bucket(Bucket=bucket)
            for folder, bucket, prefix in (
                ("model", "models", "demo-llama/"),
                ("data/domain-adaptation", "datasets", "domain-adaptation/"),
            ):
                root = Path(tmp) / folder
                for path in sorted(p for p in root.rglob("*") if p.is_file()):
                    s3.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())


# --- kubetune ---------------------------------------------------------------------------------


def install_chart(trainer_image: str) -> None:
    step("the kubetune chart")
    pull = "IfNotPresent" if os.environ.get("TRAINER_IMAGE") else "Never"
    settings = {
        "image.repository": OPERATOR_IMAGE.split(":")[0],
        "image.tag": OPERATOR_IMAGE.split(":")[1],
        "image.pullPolicy": "Never",
        "trainer.images.nvidia": trainer_image,
        "trainer.images.neuron": trainer_image,
        "trainer.images.cpu": trainer_image,
        "trainer.images.pullPolicy": pull,
        "trainer.shmSize": "1Gi",
        "trainer.scratchSize": "4Gi",
        "progressIntervalSeconds": "5",
        "hubRecheckSeconds": "15",
        "logLevel": "DEBUG",
    }
    flags = [f"--set={key}={value}" for key, value in settings.items()]
    run(
        str(helm_binary()),
        "upgrade",
        "--install",
        "kubetune",
        str(REPO / "charts" / "kubetune"),
        "--kube-context",
        CONTEXT,
        "--namespace",
        SYSTEM,
        "--create-namespace",
        "--wait",
        "--timeout=5m",
        *flags,
    )


HUB = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelHub",
    "metadata": {"name": "e2e", "namespace": NAMESPACE},
    "spec": {
        "storage": {"secretRef": {"name": "s3"}},
        "models": [
            {
                "modelId": "demo-llama",
                "source": "s3://models/demo-llama/",
                "tasks": ["domain-adaptation"],
                "defaults": {
                    "hyperparameters": {"learning_rate": 0.01, "per_device_train_batch_size": 8}
                },
            }
        ],
    },
}
JOB = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "incident-notes", "namespace": NAMESPACE},
    "spec": {
        "model": {"hubRef": {"name": "e2e"}, "modelId": "demo-llama"},
        "data": {"train": "s3://datasets/domain-adaptation/", "secretRef": {"name": "s3"}},
        "hyperparameters": {"epoch": 1, "max_input_length": 64},
        "resources": {"accelerator": "none", "cpu": 1, "memory": "3Gi"},
        "output": {"uri": "s3://artifacts/incident-notes/", "secretRef": {"name": "s3"}},
        "runPolicy": {"backoffLimit": 0},
    },
}


def status(kind: str, name: str) -> dict:
    found = kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json", capture=True)
    return json.loads(found).get("status") or {}


def wait_for(what: str, check, timeout: float) -> None:
    """Polls check() -> (done, failed reason or None) every 5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, failure = check()
        if failure:
            diagnose()
            raise SystemExit(f"{what}: {failure}")
        if done:
            print(f"{what}: yes")
            return
        time.sleep(5)
    diagnose()
    raise SystemExit(f"{what}: not within {timeout:.0f} s")


def hub_ready():
    conditions = {c["type"]: c for c in status("mhub", "e2e").get("conditions", [])}
    ready = conditions.get("Ready", {})
    return ready.get("status") == "True", None


def job_succeeded():
    found = status("ftj", "incident-notes")
    phase, progress = found.get("phase"), found.get("progress", {})
    print(f"  phase {phase}, progress {progress.get('percent', 0)}%", flush=True)
    if phase == "Failed":
        failed = [c for c in found.get("conditions", []) if c["type"] == "Failed"]
        return False, f"Failed: {failed}"
    return phase == "Succeeded", None


def run_job() -> None:
    step("a ModelHub and a CPU FineTuneJob")
    apply(HUB)
    wait_for("ModelHub e2e Ready", hub_ready, timeout=120)
    apply(JOB)
    wait_for("FineTuneJob incident-notes Succeeded", job_succeeded, timeout=JOB_TIMEOUT)
    found = status("ftj", "incident-notes")
    print(json.dumps(found.get("metrics"), indent=2))
    with s3_client() as s3:
        listed = s3.list_objects_v2(Bucket="artifacts", Prefix="incident-notes/")
        keys = {item["Key"] for item in listed.get("Contents", [])}
    for key in ("incident-notes/MANIFEST.json", "incident-notes/metrics.json"):
        assert key in keys, f"{key} not in the artifacts: {sorted(keys)}"
    assert any(k.startswith("incident-notes/adapter/") for k in keys), sorted(keys)


def diagnose() -> None:
    """What a person would look at first when it did not work."""
    for command in (
        ["-n", NAMESPACE, "get", "mhub,ftj,pytorchjobs,pods", "-o", "wide"],
        ["-n", NAMESPACE, "get", "ftj", "-o", "yaml"],
        ["-n", NAMESPACE, "describe", "pytorchjobs"],
        ["-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp"],
        ["-n", NAMESPACE, "logs", "-l", "training.kubeflow.org/job-name", "--tail=100"],
        ["-n", SYSTEM, "logs", "deployment/kubetune", "--tail=200"],
    ):
        subprocess.run(["kubectl", "--context", CONTEXT, *command], check=False)


def main() -> int:
    started = time.monotonic()
    create_cluster()
    try:
        trainer_image = build_images()
        install_training_operator()
        install_s3()
        upload_model_and_data()
        install_chart(trainer_image)
        run_job()
    finally:
        if os.environ.get("KEEP_CLUSTER") != "1":
            step(f"deleting the kind cluster {CLUSTER} (KEEP_CLUSTER=1 keeps it)")
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], check=False)
    print(f"\nkind e2e passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
