"""Kubeflow Trainer v2 (TrainJob) and the JobSet controller its TrainJobs become, as addons of the
test control plane (addons.py): each with a config file, its webhooks by URL on 127.0.0.1 with
the plane's certificates, internal cert management off, probes and metrics on free ports."""

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from kubernetes import client

from tests.cluster import build
from tests.cluster.addons import (
    Addon,
    kustomized,
    namespace,
    secret,
    service,
    service_account,
    webhook_configurations,
    write_serving_certs,
    yaml_docs,
)
from tests.cluster.process import ComponentError, Process, free_port, http_ok

TRAINER_NAMESPACE = "kubeflow-system"  # the Trainer's own (cert.GetOperatorNamespace) default
# Names the Trainer derives from its config's certManagement defaults even with it off: the
# TrainJobStatus plugin copies ca.crt from this Secret into each TrainJob's ConfigMap and puts
# this Service in the status URL it gives the pods.
TRAINER_SERVICE = "kubeflow-trainer-controller-manager"
TRAINER_SECRET = "kubeflow-trainer-webhook-cert"
TRAINER_FEATURE_GATES = ("TrainJobStatus",)  # pkg/features/features.go (v2.3: the only one)


def jobset_crds() -> list[dict]:
    """JobSet's CRD. Its kustomization adds a conversion webhook; with one served version
    nothing converts: left out."""
    return [doc for path in build.crd_paths()["jobset"] for doc in yaml_docs(path)]


def trainer_crds() -> list[dict]:
    """The Trainer's CRDs, and JobSet's: it watches JobSets, and fails to start without it."""
    return [doc for path in build.crd_paths()["trainer"] for doc in yaml_docs(path)] + \
        jobset_crds()


def jobset(plane) -> Addon:
    probe, metrics, webhook = free_port(), free_port(), free_port()
    cert_dir = plane.dir / "jobset-certs"  # its webhook and metrics servers read tls.crt/key
    write_serving_certs(plane.pki, cert_dir)
    config = {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}", "certDir": str(cert_dir)},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probe}"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
    }
    config_path = plane.dir / "jobset-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    docs = kustomized(build.module_dir("trainer", "JOBSET") / "config/components/webhook")
    return Addon(
        Process("jobset", [plane.bin["jobset"], f"--config={config_path}"], plane.logs, env=env),
        ready=lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"),
        crds=jobset_crds(),
        # Its pod webhooks select JobSet pods only (an objectSelector its kustomization adds).
        after=webhook_configurations(docs, {("jobset.x-k8s.io", "*"), ("", "pods")}, webhook,
                                     plane.pki, {
            "MutatingWebhookConfiguration": "jobset-mutating-webhook-configuration",
            "ValidatingWebhookConfiguration": "jobset-validating-webhook-configuration"}))


def trainer(plane) -> Addon:
    """The Trainer's controller manager; `plane.trainer_feature_gates` turns on its gates."""
    probe, metrics, webhook = free_port(), free_port(), free_port()
    gates = dict(plane.trainer_feature_gates)
    if unknown := set(gates) - set(TRAINER_FEATURE_GATES):
        raise ValueError(f"unknown Trainer feature gates {sorted(unknown)}; known: "
                         f"{list(TRAINER_FEATURE_GATES)}")
    # Its webhook server reads $TMPDIR/k8s-webhook-server/serving-certs (controller-runtime's
    # default); with cert management off nothing else reads or writes certificates.
    tmp = plane.dir / "trainer-tmp"
    write_serving_certs(plane.pki, tmp / "k8s-webhook-server/serving-certs")
    config = {
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1", "kind": "Configuration",
        "webhook": {"host": "127.0.0.1", "port": webhook},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},  # TLS, a self-signed certificate
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probe}"},
        "leaderElection": {"leaderElect": False},
        "certManagement": {"enable": False, "webhookServiceName": TRAINER_SERVICE,
                           "webhookSecretName": TRAINER_SECRET},
        "featureGates": gates,
    }
    args = [plane.bin["trainer-controller-manager"], f"--config={plane.dir / 'trainer.yaml'}"]
    before = [namespace(TRAINER_NAMESPACE), secret(TRAINER_NAMESPACE, TRAINER_SECRET, plane.pki),
              service(TRAINER_NAMESPACE, TRAINER_SERVICE, {"webhook": 443})]
    prepare, grace = None, 10
    if gates.get("TrainJobStatus"):
        # Its status server never returns from Start (v2.3: serverShutdown is never closed),
        # so SIGTERM ends nothing until the manager's 30 s graceful-shutdown timeout.
        grace = 1
        status = free_port()
        config["statusServer"] = {"port": status}
        before[-1]["spec"]["ports"].append({"name": "status", "port": status})
        before.append(service_account(TRAINER_NAMESPACE, TRAINER_SERVICE))
        pod_files = plane.dir / "trainer-serviceaccount"
        args = in_pod_paths(args, pod_files, tmp / "k8s-webhook-server")

        def prepare() -> None:  # once the ServiceAccount exists: its token, as a pod has it
            pod_files.mkdir(exist_ok=True)
            (pod_files / "namespace").write_text(TRAINER_NAMESPACE)
            (pod_files / "token").write_text(token(plane, TRAINER_NAMESPACE, TRAINER_SERVICE))
    (plane.dir / "trainer.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "TMPDIR": str(tmp)}
    docs = kustomized(build.module_dir("trainer") / "manifests/base/webhook")
    return Addon(
        Process("trainer", args, plane.logs, env=env, grace=grace),
        ready=lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"),
        crds=trainer_crds(), before=before, prepare=prepare,
        after=webhook_configurations(docs, {("trainer.kubeflow.org", "*")}, webhook, plane.pki, {
            "MutatingWebhookConfiguration": "defaulter.trainer.kubeflow.org",
            "ValidatingWebhookConfiguration": "validator.trainer.kubeflow.org"}))


# -- what the TrainJobStatus gate needs ---------------------------------------------------------
# Its status server (pkg/statusserver) serves TLS from /tmp/k8s-webhook-server/serving-certs
# (hard-coded, not $TMPDIR) and finds the token issuer by reading the pod's service-account
# token at /var/run/secrets/kubernetes.io/serviceaccount/token (hard-coded), then OIDC discovery
# at that issuer through its own client: the API server's first --service-account-issuer is
# its URL for that (controlplane.py). Both paths are per plane here: the Trainer runs in a mount
# namespace of its own where they are this plane's folders; nothing is written outside it.

IN_POD_PATHS = """set -e
files="$1" certs="$2"; shift 2
mount -t tmpfs tmpfs "$(realpath /var/run)"
mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
mount --bind "$files" /var/run/secrets/kubernetes.io/serviceaccount
mount --bind "$certs" /tmp/k8s-webhook-server
exec "$@"
"""


def unshare_args() -> list[str]:
    """unshare for a mount namespace of our own: as root plainly, else in a user namespace."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--propagation", "private", "--"]


@functools.cache
def private_mounts() -> str | None:
    """None where a process can have mounts of its own here; else why not."""
    if not shutil.which("unshare"):
        return "no unshare (util-linux) on PATH"
    done = subprocess.run([*unshare_args(), "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare --mount: {done.stderr.strip()}"


def in_pod_paths(args: list, pod_files: Path, webhook_dir: Path) -> list:
    """`args` run where /var/run/secrets/kubernetes.io/serviceaccount is `pod_files` and
    /tmp/k8s-webhook-server is `webhook_dir`, as in the Trainer's pod."""
    if reason := private_mounts():
        raise ComponentError(f"trainer: the TrainJobStatus gate needs a mount namespace: {reason}")
    Path("/tmp/k8s-webhook-server").mkdir(exist_ok=True)  # the mount point, empty
    return [*unshare_args(), "sh", "-c", IN_POD_PATHS, "sh", pod_files, webhook_dir, *args]


def token(plane, namespace: str, account: str) -> str:
    """A token for the ServiceAccount (TokenRequest), as a pod's projected volume holds it."""
    answer = client.CoreV1Api(plane.api_client()).create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 86400}}, _preload_content=False)
    return json.loads(answer.data)["status"]["token"]
