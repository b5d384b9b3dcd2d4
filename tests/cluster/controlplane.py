"""A real Kubernetes control plane for tests, as local processes in a temporary folder: etcd and
kube-apiserver always, the other components on request (`ControlPlane(components=...)`).

    with ControlPlane(crds=["crds/finetunejobs.yaml"]) as plane:
        subprocess.run(["kubectl", "--kubeconfig", plane.kubeconfig, "get", "nodes"])
"""

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from kubernetes import client, config, dynamic

from tests.cluster import addons, addons_trainer, build
from tests.cluster.pki import write_pki
from tests.cluster.process import ComponentError, Process, free_port, http_ok

FULL = frozenset({"controller-manager", "scheduler", "kwok", "training-operator", "jobset",
                  "trainer", "kueue"})
# A cluster with one generation of Kubeflow training only: its CRDs alone are installed, and
# Kueue integrates that generation's kind (addons.KUEUE_FRAMEWORKS).
TRAINING_OPERATOR_ONLY = FULL - {"jobset", "trainer"}  # v1: PyTorchJob
TRAINER_ONLY = FULL - {"training-operator"}  # v2: TrainJob, run as JobSets
BINARIES = {"controller-manager": "kube-controller-manager", "scheduler": "kube-scheduler",
            "kwok": "kwok", "training-operator": "training-operator", "jobset": "jobset",
            "trainer": "trainer-controller-manager", "kueue": "kueue"}
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Audited: each create of a training job or a ConfigMap, and its answer (201, 409 ...), so
# tests count what the server did, not what a client's log says (a SIGKILLed client logs
# nothing of a create the server answered).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create"],
         "resources": [{"group": "kubeflow.org", "resources": ["pytorchjobs"]},
                       {"group": "", "resources": ["configmaps"]}]},
        {"level": "None"},
    ],
}  # fmt: skip


class ControlPlane:
    """Starts in order, waits until each part is ready, and stops every process it started, by
    process group, whatever happens (finalizer, atexit, and the kernel if this process dies)."""

    def __init__(self, components: Iterable[str] = FULL, crds: Iterable[str | Path] = (),
                 workdir: Path | None = None, log=None,
                 trainer_feature_gates: Mapping[str, bool] | None = None):
        """`trainer_feature_gates`: the Trainer's, e.g. {"TrainJobStatus": True}
        (addons_trainer.TRAINER_FEATURE_GATES)."""
        self.components = frozenset(components)
        if unknown := self.components - FULL:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {sorted(FULL)}")
        self.trainer_feature_gates = dict(trainer_feature_gates or {})
        self.crd_files = [Path(p) for p in crds]
        self._own_dir = workdir is None  # a folder we made is ours to remove
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="kubetune-cluster-"))
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.processes: list[Process] = []
        self.startup_seconds: dict[str, float] = {}
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._dynamic = None

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop(keep=True)
            raise
        return self

    def stop(self, keep: bool = False) -> None:
        """Stops every process (reverse order); removes the temporary folder unless `keep`."""
        atexit.unregister(self.stop)
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._own_dir and not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def check(self) -> None:
        """Raises ComponentError if a component has exited since it started."""
        for process in self.processes:
            if not process.alive():
                raise process.error(f"exited with code {process.popen.returncode}")

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def create(self, objects: Iterable[dict]) -> None:
        for obj in objects:
            api = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            api.create(body=obj, namespace=obj["metadata"].get("namespace"))

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        if self._dynamic is None:  # discovery once; its cache stays in our folder
            self._dynamic = dynamic.DynamicClient(
                self.api_client(), cache_file=str(self.dir / "discovery.json"))
        return self._dynamic

    # -- start-up, in dependency order ---------------------------------------------------------

    def _start(self) -> None:
        begin = time.monotonic()
        needed = ["etcd", "kube-apiserver"] + [BINARIES[c] for c in sorted(self.components)]
        self.bin = build.ensure_built(needed, log=self._log)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pki = write_pki(self.dir / "pki")
        self._timed("etcd", self._etcd)
        apiserver_begin = time.monotonic()
        apiserver = self._apiserver()
        # While it starts (seconds): what each component needs, and the CRDs (megabytes).
        builders = {"controller-manager": ControlPlane._controller_manager,
                    "scheduler": ControlPlane._scheduler, "kwok": addons.kwok,
                    "training-operator": addons.training_operator,
                    "jobset": addons_trainer.jobset, "trainer": addons_trainer.trainer,
                    "kueue": addons.kueue}
        specs = {name: make(self) for name, make in builders.items() if name in self.components}
        crds = [doc for path in self.crd_files for doc in addons.yaml_docs(path)]
        crds += [crd for spec in specs.values() for crd in spec.crds]
        crds = list({crd["metadata"]["name"]: crd for crd in crds}.values())  # JobSet's: twice
        apiserver.wait_until(self._apiserver_ready, "ready")
        self.startup_seconds["kube-apiserver"] = time.monotonic() - apiserver_begin

        started = time.monotonic()
        for spec in specs.values():  # those that need no CRD start at once, in parallel
            if spec.early:
                self.processes.append(spec.process.start())
        self.create(crds)
        self.create(obj for spec in specs.values() for obj in spec.before)
        for spec in specs.values():
            if spec.prepare:
                spec.prepare()
        self._wait_established([crd["metadata"]["name"] for crd in crds])
        self.startup_seconds["CRDs Established"] = time.monotonic() - started
        for spec in specs.values():  # the rest all at once, in parallel
            if not spec.early:
                self.processes.append(spec.process.start())
        for name, spec in specs.items():
            spec.process.wait_until(spec.ready, "ready", timeout=120)
            self.create(spec.after)
            self.startup_seconds[name] = time.monotonic() - started
        if "kwok" in self.components:
            self._timed("nodes Ready", self._wait_nodes_ready)
        self.startup_seconds["total"] = time.monotonic() - begin

    def _timed(self, name: str, step) -> None:
        begin = time.monotonic()
        step()
        self.startup_seconds[name] = time.monotonic() - begin

    def _run(self, name: str, args: list, ready, what: str = "ready", timeout: float = 60):
        process = Process(name, [self.bin[name], *args], self.logs).start()
        self.processes.append(process)
        process.wait_until(ready, what, timeout)

    def _etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self._run("etcd", [
            f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}", f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",  # a throw-away store: no fsync makes writes ~10x faster
            "--log-level=warn"], lambda: http_ok(f"{self.etcd_url}/health"))

    def _apiserver(self) -> Process:
        """Starts kube-apiserver; returns its process, not yet ready."""
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki = self.pki
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f"{pki.admin_token},admin,admin,system:masters\n")
        self._write_kubeconfig()
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = self.logs / "audit.log"
        self._apiserver_args = [
            f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={port}",
            # Endpoints may not hold a loopback address: no endpoints for the "kubernetes"
            # Service (nothing here runs in a pod network to use them).
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}", f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            # A real issuer and signing key: TokenRequest and projected tokens work. The first
            # issuer, the one tokens name, is this server: OIDC discovery works from here (the
            # Trainer's status server verifies pods' tokens so); the in-cluster name is kept.
            f"--service-account-issuer={self.server}", f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--allow-privileged=true", f"--cert-dir={self.dir / 'apiserver'}",
            "--profiling=false", f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]
        process = Process("kube-apiserver", [self.bin["kube-apiserver"], *self._apiserver_args],
                          self.logs).start()
        self.processes.append(process)
        return process

    def audit_events(self) -> list[dict]:
        """What the API server recorded (AUDIT_POLICY: creates of PyTorchJobs and
        ConfigMaps, with the answer's code), oldest first."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def _apiserver_ready(self) -> bool:
        return http_ok(f"{self.server}/readyz", ca=self.pki.ca_cert, token=self.pki.admin_token)

    def restart_apiserver(self, down_seconds: float = 0, timeout: float = 60) -> float:
        """SIGKILLs kube-apiserver and starts it again on the same port and etcd, after
        `down_seconds`; returns the seconds from the kill until it is ready again. Every client
        sees its connections cut and its watches end, as in a control-plane crash."""
        index, old = next((i, p) for i, p in enumerate(self.processes)
                          if p.name == "kube-apiserver")
        killed = time.monotonic()
        os.killpg(old.popen.pid, signal.SIGKILL)
        old.popen.wait(timeout=10)
        time.sleep(down_seconds)
        new = Process("kube-apiserver", [self.bin["kube-apiserver"], *self._apiserver_args],
                      self.logs).start()
        self.processes[index] = new
        new.wait_until(self._apiserver_ready, "ready after a restart", timeout)
        return time.monotonic() - killed

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubetune-test",
            "clusters": [{"name": "kubetune-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki.ca_cert)}}],
            "users": [{"name": "admin", "user": {"token": self.pki.admin_token}}],
            "contexts": [{"name": "kubetune-test",
                          "context": {"cluster": "kubetune-test", "user": "admin"}}],
        }))

    def _controller_manager(self) -> addons.Addon:
        port, pki = free_port(), self.pki
        args = [self.bin["kube-controller-manager"], f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={port}",
                f"--cert-dir={self.dir / 'controller-manager'}", "--leader-elect=false",
                "--controllers=*", "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}", f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}", "--cluster-name=kubetune-test",
                f"--flex-volume-plugin-dir={self.dir / 'flexvolume'}"]  # not /usr/libexec/...
        core = client.CoreV1Api(self.api_client())

        def ready() -> bool:  # serving, and its controllers running: "default" has its SA
            return http_ok(f"https://127.0.0.1:{port}/healthz") and bool(
                core.list_namespaced_service_account("default").items)

        return addons.Addon(Process("controller-manager", args, self.logs), ready)

    def _scheduler(self) -> addons.Addon:
        port = free_port()
        args = [self.bin["kube-scheduler"], f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false"]
        return addons.Addon(Process("scheduler", args, self.logs),
                            lambda: http_ok(f"https://127.0.0.1:{port}/healthz"), early=True)

    def _wait_established(self, names: list[str], timeout: float = 30) -> None:
        api = self.dynamic.resources.get(api_version="apiextensions.k8s.io/v1",
                                         kind="CustomResourceDefinition")
        deadline = time.monotonic() + timeout
        for name in names:
            while not _condition(api.get(name=name).to_dict(), "Established"):
                if time.monotonic() > deadline:
                    raise ComponentError(f"kube-apiserver: CRD {name} not Established after "
                                         f"{timeout:.0f} s")
                time.sleep(0.1)

    def _wait_nodes_ready(self, timeout: float = 60) -> None:
        core = client.CoreV1Api(self.api_client())
        deadline = time.monotonic() + timeout
        while True:
            nodes = core.list_node().items
            waiting = [n.metadata.name for n in nodes
                       if not any(c.type == "Ready" and c.status == "True"
                                  for c in n.status.conditions or [])]
            if nodes and not waiting:
                return
            if time.monotonic() > deadline:
                kwok = next(p for p in self.processes if p.name == "kwok")
                raise kwok.error(f"left nodes {waiting} not Ready after {timeout:.0f} s")
            time.sleep(0.2)


def _condition(obj: dict, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])
