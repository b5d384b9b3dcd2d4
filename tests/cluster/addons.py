"""What runs on top of the kube-apiserver in the test control plane: kwok (fake nodes and pod
lifecycle), the Kubeflow Training Operator and Kueue (the Trainer and JobSet: addons_trainer.py),
each with the CRDs and objects it needs before it starts and those for after it is ready (its
webhooks, called by URL on 127.0.0.1)."""

import base64
import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.cluster import build
from tests.cluster.process import Process, free_port, http_ok

HERE = Path(__file__).resolve().parent
NODES = HERE / "nodes.yaml"
OUR_STAGES = sorted((HERE / "stages").glob("*.yaml"))
KWOK_STAGES = [  # kwok's stock stages, as `kwokctl create cluster` loads them, but one:
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    # not pod/fast/pod-complete.yaml: ours (stages/pod-complete.yaml) completes the same pods
    # and more, as their annotations say; two matching Stages would race (kwok picks one).
    "kustomize/stage/pod/fast/pod-delete.yaml",
]
TRAINING_NAMESPACE = "kubeflow"
KUEUE_NAMESPACE = "kueue-system"
# Kueue's integrations we turn on: framework -> (the component whose CRD brings its kind, the
# kind's (group, plural)). An integration needs its CRD when Kueue starts: a plane's Kueue runs
# those of its components. Only their webhooks are registered, with Kueue's own kinds: not
# those for pods, deployments and other frameworks, which would put every pod behind Kueue.
KUEUE_FRAMEWORKS = {
    "batch/job": (None, ("batch", "jobs")),
    "kubeflow.org/pytorchjob": ("training-operator", ("kubeflow.org", "pytorchjobs")),
    "trainer.kubeflow.org/trainjob": ("trainer", ("trainer.kubeflow.org", "trainjobs")),
}


def yaml_docs(path: Path) -> list[dict]:
    """The documents of a YAML file, parsed by libyaml where PyYAML has it: Kueue's CRDs are
    1.5 MB, 2.4 s with the pure-Python parser, 0.25 s with libyaml."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


@dataclass
class Addon:
    process: Process
    ready: Callable[[], bool]  # polled until true once the process runs
    crds: list[dict] = field(default_factory=list)  # created, and Established, before it starts
    before: list[dict] = field(default_factory=list)  # created before it starts
    after: list[dict] = field(default_factory=list)  # created once it is ready
    prepare: Callable[[], None] | None = None  # called once `before` exists, before it starts
    # Starts before the CRDs are created, as it reads none. Not the controller-manager: its
    # garbage collector would see CRDs created later only at its next discovery, 30 s on.
    early: bool = False


def kwok(plane) -> Addon:
    port = free_port()
    stages = [build.module_dir("kwok") / s for s in KWOK_STAGES] + OUR_STAGES
    args = [plane.bin["kwok"], f"--kubeconfig={plane.kubeconfig}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            # Leases are the heartbeat the node lifecycle controller watches: without them it
            # marks the nodes NotReady after 50 s and evicts their pods.
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{port}", *(f"--config={s}" for s in stages)]
    return Addon(Process("kwok", args, plane.logs),
                 ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
                 after=yaml_docs(NODES), early=True)


def training_operator(plane) -> Addon:
    probe, metrics, webhook = free_port(), free_port(), free_port()
    # Its webhook server reads $TMPDIR/k8s-webhook-server/serving-certs (controller-runtime's
    # default), and its cert rotator, which never writes files (they are a mounted Secret in a
    # pod), waits for /tmp/k8s-webhook-server/serving-certs/tls.crt (hard-coded) to exist.
    tmp = plane.dir / "training-operator-tmp"
    write_serving_certs(plane.pki, tmp / "k8s-webhook-server/serving-certs")
    _ensure_file(Path("/tmp/k8s-webhook-server/serving-certs/tls.crt"), plane.pki.serving_cert)
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "TMPDIR": str(tmp),
           "MY_POD_NAMESPACE": TRAINING_NAMESPACE}
    args = [plane.bin["training-operator"], "--enable-scheme=pytorchjob", "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{probe}", f"--webhook-server-port={webhook}"]
    manifest = build.module_dir("training-operator") / "manifests/base/webhook/manifests.yaml"
    return Addon(
        Process("training-operator", args, plane.logs, env=env),
        ready=lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"),
        crds=[doc for path in build.crd_paths()["training-operator"] for doc in yaml_docs(path)],
        # The Secret its cert rotator keeps (it is ours, so it needs no new CA).
        before=[namespace(TRAINING_NAMESPACE),
                secret(TRAINING_NAMESPACE, "training-operator-webhook-cert", plane.pki)],
        after=webhook_configurations(
            yaml_docs(manifest), {("kubeflow.org", "pytorchjobs")}, webhook, plane.pki,
            {"ValidatingWebhookConfiguration": "validator.training-operator.kubeflow.org"}))


def kueue(plane) -> Addon:
    """Kueue, and its CRDs with conversion webhooks that point at this Kueue."""
    probe, metrics, webhook = free_port(), free_port(), free_port()
    frameworks = [name for name, (component, _) in KUEUE_FRAMEWORKS.items()
                  if component is None or component in plane.components]
    webhook_resources = {("kueue.x-k8s.io", "*")} | {KUEUE_FRAMEWORKS[f][1] for f in frameworks}
    cert_dir = plane.dir / "kueue-certs"
    write_serving_certs(plane.pki, cert_dir)
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probe}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        # With internal cert management off, Kueue reads its metrics certificate from
        # /etc/kueue/metrics/certs; on, its rotator keeps the Secret below (ours).
        "internalCertManagement": {"enable": True, "webhookServiceName": "kueue-webhook-service",
                                   "webhookSecretName": "kueue-webhook-server-cert"},
        "integrations": {"frameworks": frameworks},
        # The visibility API server writes its certificates to /visibility: off.
        "featureGates": {"VisibilityOnDemand": False},
    }
    config_path = plane.dir / "kueue-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    manifest = build.module_dir("kueue") / "config/components/webhook/manifests.yaml"
    return Addon(
        Process("kueue", [plane.bin["kueue"], f"--config={config_path}"], plane.logs, env=env),
        ready=lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"),
        before=[namespace(KUEUE_NAMESPACE),
                secret(KUEUE_NAMESPACE, "kueue-webhook-server-cert", plane.pki)],
        after=webhook_configurations(yaml_docs(manifest), webhook_resources, webhook, plane.pki, {
            "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
            "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}),
        crds=kueue_crds(webhook, plane.pki))


def kueue_crds(webhook_port: int, pki) -> list[dict]:
    """Kueue's CRDs with the conversion webhooks its kustomization patches in (its cert rotator
    fails unless each CRD it injects a CA into has one)."""
    crd_dir = build.module_dir("kueue") / "config/components/crd"
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    conversions = {}
    for patch in kustomization.get("patches", []):
        doc = yaml_docs(crd_dir / patch["path"])[0]
        if "conversion" in doc.get("spec", {}):
            conversion = doc["spec"]["conversion"]
            path = conversion["webhook"]["clientConfig"]["service"]["path"]
            conversion["webhook"]["clientConfig"] = _client_config(webhook_port, path, pki)
            conversions[doc["metadata"]["name"]] = conversion
    crds = [doc for path in build.crd_paths()["kueue"] for doc in yaml_docs(path)]
    for crd in crds:
        if crd["metadata"]["name"] in conversions:
            crd["spec"]["conversion"] = conversions[crd["metadata"]["name"]]
    return crds


def webhook_configurations(docs: list[dict], resources: set[tuple[str, str]], port: int, pki,
                           names: dict[str, str]) -> list[dict]:
    """The upstream webhook configurations among `docs`, only the webhooks for `resources`
    ((group, plural), plural "*" for a whole group), renamed as the operator's cert rotator
    expects, by URL."""
    configurations = []
    for doc in docs:
        if doc["kind"] not in names:
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": names[doc["kind"]]}
        doc["webhooks"] = [hook for hook in doc["webhooks"] if _matches(hook, resources)]
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = _client_config(port, path, pki)
        if doc["webhooks"]:
            configurations.append(doc)
    return configurations


def kustomized(folder: Path) -> list[dict]:
    """The documents of a kustomization's `resources` with its JSON 6902 patches applied (what
    `kustomize build` gives, less name prefixes and generated names): upstream webhook folders
    patch in names and object selectors this way."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization.get("resources", []) for doc in yaml_docs(folder / name)]
    for patch in kustomization.get("patches", []):
        target = patch.get("target") or {}
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        if not isinstance(ops, list):
            continue  # a strategic-merge patch: none of the folders we read needs one
        for doc in docs:
            if doc["kind"] == target.get("kind") and target.get("name") in (None, doc[
                    "metadata"]["name"]):
                for op in ops:
                    _json_patch(doc, op)
    return docs


def _json_patch(doc: dict, op: dict) -> None:
    *parents, last = [part.replace("~1", "/").replace("~0", "~")
                      for part in op["path"].lstrip("/").split("/")]
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "remove":
        del node[key]
    elif op["op"] == "add" and isinstance(node, list):
        node.insert(len(node) if key == "-" else key, op["value"])
    elif op["op"] in ("add", "replace"):
        node[key] = op["value"]
    else:
        raise NotImplementedError(f"JSON patch op {op['op']} ({op['path']})")


def _matches(hook: dict, resources: set[tuple[str, str]]) -> bool:
    return any((group, plural) in resources or (group, "*") in resources
               for rule in hook.get("rules", []) for group in rule.get("apiGroups", [])
               for plural in rule.get("resources", []))


def _client_config(port: int, path: str, pki) -> dict:
    return {"url": f"https://127.0.0.1:{port}{path}",
            "caBundle": base64.b64encode(pki.ca_cert.read_bytes()).decode()}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret(namespace: str, name: str, pki) -> dict:
    data = {key: base64.b64encode(value).decode() for key, value in pki.secret_data().items()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def service(namespace: str, name: str, ports: dict[str, int]) -> dict:
    """A Service without a selector: nothing is behind it, its name is what counts (the local
    kubelet resolves it to 127.0.0.1)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": n, "port": p} for n, p in ports.items()]}}


def service_account(namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}}


def write_serving_certs(pki, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(pki.serving_cert.read_bytes())
    (folder / "tls.key").write_bytes(pki.serving_key.read_bytes())


def _ensure_file(path: Path, source: Path) -> None:
    """Creates `path` if missing, atomically: several test sessions may race for it."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(source.read_bytes())
    os.replace(tmp, path)
