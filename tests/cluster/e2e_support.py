"""What the end-to-end tests on the real control plane share: kubectl, waiting, the chart
installed by the real helm (idempotent: every module that needs it asks), the operator as
`kubetune operator` authenticated with the chart ServiceAccount's token and configured by the
chart's ConfigMap, and storage Secrets that point the operator and the pods at moto."""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import HelmUnavailable, helm_binary
from tests.cluster.images import Image, from_dockerfile
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
RELEASE, SYSTEM = "kubetune", "kubetune-system"
CONFIGMAP_KEY = "config.yaml"  # kubetune.config.CONFIGMAP_KEY, the chart's ConfigMap key


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


def ensure_namespace(plane, name: str) -> None:
    if get(plane, "namespace", name) is None:
        kubectl(plane, "create", "namespace", name)


def storage_secret(name: str, namespace: str, endpoint: str) -> dict:
    data = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


def hub_ready(plane, namespace: str, name: str) -> bool:
    found = get(plane, "mhub", "-n", namespace, name) or {}
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def trainer_image() -> Image:
    """The bundled trainer image as this machine holds it, for the local kubelet: its
    entrypoint script, ENV and WORKDIR, and this venv's python and torchrun on PATH."""
    image = REPO / "trainer-image"
    return from_dockerfile(image / "Dockerfile", ["bash", str(image / "entrypoint.sh")],
                           path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin")


def install_chart(plane) -> None:
    """`helm upgrade --install` of the chart with one replica: the first module that needs it
    installs it, later ones find it there (the control plane lives for the session)."""
    try:
        helm = helm_binary()
    except HelmUnavailable as err:
        pytest.skip(str(err))
    done = subprocess.run(
        [str(helm), "upgrade", "--install", RELEASE, str(CHART), "--namespace", SYSTEM,
         "--create-namespace", "--kubeconfig", str(plane.kubeconfig), "--set", "replicaCount=1"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def token_kubeconfig(plane, token: str, path: Path) -> Path:
    """The admin kubeconfig's server and CA, with the ServiceAccount's token as the user."""
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(admin))
    return path


def operator_files(plane, work: Path, **settings) -> tuple[Path, Path]:
    """(kubeconfig with the chart ServiceAccount's token, the chart's ConfigMap as the config
    file with `settings` (OperatorConfig keys, camelCase) put into its config.yaml)."""
    token = kubectl(plane, "create", "token", RELEASE, "-n", SYSTEM, "--duration=2h").strip()
    kubeconfig = token_kubeconfig(plane, token, work / "operator.kubeconfig")
    configmap = yaml.safe_load(kubectl(plane, "get", "configmap", f"{RELEASE}-config", "-n",
                                       SYSTEM, "-o", "yaml"))  # fmt: skip
    if settings:
        config = yaml.safe_load(configmap["data"][CONFIGMAP_KEY]) or {}
        configmap["data"][CONFIGMAP_KEY] = yaml.safe_dump({**config, **settings})
    path = work / "operator-config.yaml"
    path.write_text(yaml.safe_dump(configmap))
    return kubeconfig, path


class Operator:
    """`kubetune operator` in a process of its own, as the chart's ServiceAccount, with no AWS_*
    of the test's: it reaches storage only through the Secrets that hubs and jobs name. Start N
    writes operator-N.log in `work`."""

    def __init__(self, plane, work: Path, *args: str, **settings):
        self.work, self.args = work, args
        self.kubeconfig, self.config = operator_files(plane, work, **settings)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.work / f"operator-{self.starts}.log"

    def logs(self) -> str:
        """Every start's log, in order."""
        return "".join((self.work / f"operator-{n}.log").read_text(errors="replace")
                       for n in range(1, self.starts + 1))  # fmt: skip

    def start(self) -> "Operator":
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli.main", "operator", "--config", str(self.config),
             "--metrics-port", str(free_port()), "--health-port", str(free_port()), *self.args],
            env={**env, "KUBECONFIG": str(self.kubeconfig)}, stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers; requests in flight are cut."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
