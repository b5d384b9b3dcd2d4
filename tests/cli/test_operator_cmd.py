"""`kubetune operator` before it reaches kopf: a missing kubeconfig, an API server that does not
answer, a bad config file: each is one line and exit 2, never a traceback."""

import subprocess
import sys

import pytest

from tests.support.processes import free_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""


def operator(tmp_path, kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
    env = {"KUBECONFIG": kubeconfig, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "kubetune.cli.main", "operator"]
    ports = ["--metrics-port", str(free_port()), "--health-port", str(free_port())]
    return subprocess.run(
        [*command, *ports, *args], env=env, capture_output=True, text=True, timeout=60
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert done.returncode == 2, done.returncode
    return lines[0]


def test_no_kubeconfig_is_one_line(tmp_path):
    line = one_line(operator(tmp_path, str(tmp_path / "nonexistent")))
    assert "ERROR no cluster to talk to: not in a pod, and the kubeconfig:" in line


def test_an_api_server_that_does_not_answer_is_one_line(tmp_path):
    port = free_port()
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(port=port))
    line = one_line(operator(tmp_path, str(path)))
    assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{port}" in line
    assert "Connection refused" in line


@pytest.mark.parametrize(
    "text, says",
    [
        ("terminationGraceSeconds: 10\n", "terminationGraceSeconds: 10: must be >= 30"),
        ("a: 1\na: 2\n", "line 2: mapping key 'a' already defined at line 1"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, text, says):
    config = tmp_path / "operator.yaml"
    config.write_text(text)
    line = one_line(operator(tmp_path, str(tmp_path / "none"), "--config", str(config)))
    assert str(config) in line and says in line
