"""The trainer image, checked without Docker: the Dockerfile's contract with the pod, and the
entrypoint run under bash with a fake torchrun that records how it was called."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "trainer-image" / "Dockerfile"
ENTRYPOINT = REPO / "trainer-image" / "entrypoint.sh"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1].strip()) for i in joined]


def values(instruction: str) -> list[str]:
    return [args for name, args in instructions(DOCKERFILE) if name == instruction]


def env() -> dict[str, str]:
    """Every ENV of the Dockerfile (KEY=value form)."""
    pairs = {}
    for args in values("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            pairs[key] = value
    return pairs


# --- Dockerfile ---------------------------------------------------------------------------


def test_runs_as_a_fixed_numeric_non_root_user():
    user = values("USER")[-1]  # the last USER is the one the container runs as
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: runAsNonRoot needs numeric ids"
    assert all(int(part) != 0 for part in user.split(":"))


def test_entrypoint_is_the_script_in_exec_form():
    (entrypoint,) = values("ENTRYPOINT")
    # Exec form: no /bin/sh -c in between, so SIGTERM reaches the script (and then torchrun).
    command = json.loads(entrypoint)
    copies = [c.split() for c in values("COPY") if "trainer-image/entrypoint.sh" in c]
    assert len(copies) == 1 and command == [copies[0][-1]]


def test_scratch_caches_and_no_baked_credentials():
    variables = env()
    assert variables["KUBETUNE_SCRATCH"] == "/scratch"
    for name in ("HF_HOME", "HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert variables[name].startswith("/scratch/"), name  # the root filesystem is read-only
    declared = set(variables) | {a.split("=")[0] for a in values("ARG")}
    secret = re.compile(r"AWS_|SECRET|TOKEN|PASSWORD|KEY", re.I)
    assert not [name for name in declared if secret.search(name)]


def test_base_image_torch_matches_the_pinned_torch():
    """constraints.txt pins the CPU wheel CI tests with; the image keeps its base's CUDA build
    of the same version, so bumping one without the other fails here."""
    pinned = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)[1]
    base = dict(a.split("=", 1) for a in values("ARG") if "=" in a)["BASE_IMAGE"]
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(pinned)}-cuda12\.\d+-cudnn9-runtime", base)
    # The install drops constraints.txt's torch line rather than replacing the CUDA build.
    (install,) = [r for r in values("RUN") if "pip install" in r]
    assert "grep -v -i '^torch==' constraints.txt" in install
    assert '".[trainer,mlflow]"' in install and "bitsandbytes==" in install


def test_installs_the_trainer_without_the_operators_stack():
    (install,) = [r for r in values("RUN") if "pip install" in r]
    assert "operator]" not in install
    # The build fails if kopf, the kubernetes client or prometheus_client got in anyway.
    assert "for m in ('kopf', 'kubernetes', 'prometheus_client')" in install


# --- entrypoint ---------------------------------------------------------------------------


def test_entrypoint_is_valid_bash_and_execs_the_launcher():
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)
    assert re.search(
        r"^exec python -m kubetune_trainer.launch \"\$@\"$", ENTRYPOINT.read_text(), re.M
    )


@pytest.fixture
def fake_torchrun(tmp_path: Path) -> Path:
    """A `torchrun` on PATH that writes its parent's pid and its arguments, one per line, to
    calls.txt, then runs the body in $FAKE_TORCHRUN (default: exit 0)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "torchrun"
    calls = tmp_path / "calls.txt"
    script.write_text(
        f'#!/bin/sh\necho $PPID > {calls}\nprintf "%s\\n" "$@" >> {calls}\n'
        'eval "${FAKE_TORCHRUN:-exit 0}"\n'
    )
    script.chmod(0o755)
    return bin_dir


def entrypoint_env(tmp_path: Path, bin_dir: Path, variables: dict) -> dict:
    return {
        # the fake torchrun first; then this venv's python, bash and mkdir
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path / "scratch" / "home"),
        "TMPDIR": str(tmp_path / "scratch" / "tmp"),
        **variables,
    }


def run_entrypoint(tmp_path: Path, bin_dir: Path, variables: dict, *args: str) -> list[str]:
    """Run the entrypoint; returns torchrun's arguments after checking that the launcher
    replaced the shell (it is the process Kubernetes signals) and started torchrun."""
    environment = entrypoint_env(tmp_path, bin_dir, variables)
    process = subprocess.Popen(["bash", str(ENTRYPOINT), *args], env=environment)
    assert process.wait(timeout=60) == 0
    pid, *arguments = (tmp_path / "calls.txt").read_text().splitlines()
    assert int(pid) == process.pid
    assert (tmp_path / "scratch" / "tmp").is_dir() and (tmp_path / "scratch" / "home").is_dir()
    return arguments


PYTORCHJOB_WORKER_0 = {  # what the Training Operator sets on worker 0 of 1 master + 2 workers
    "PET_NNODES": "3",
    "PET_NPROC_PER_NODE": "8",
    "PET_NODE_RANK": "1",
    "MASTER_ADDR": "tune-master-0",
    "MASTER_PORT": "23456",
    "KUBETUNE_CONFIG": "/config/job.json",
}
TORCHRUN_ARGS = [
    "--nnodes=3",
    "--nproc_per_node=8",
    "--node_rank=1",
    "--master_addr=tune-master-0",
    "--master_port=23456",
    "-m",
    "kubetune_trainer.train",
    "--config",
    "/config/job.json",
]


def test_entrypoint_passes_the_pytorchjob_topology_to_torchrun(tmp_path, fake_torchrun):
    arguments = run_entrypoint(tmp_path, fake_torchrun, PYTORCHJOB_WORKER_0, "--extra", "a b")
    assert arguments == [*TORCHRUN_ARGS, "--extra", "a b"]


def test_entrypoint_takes_the_trainjob_master_variables(tmp_path, fake_torchrun):
    # Kubeflow Trainer sets PET_MASTER_ADDR/PET_MASTER_PORT and no plain MASTER_ADDR.
    variables = {k: v for k, v in PYTORCHJOB_WORKER_0.items() if not k.startswith("MASTER_")}
    variables |= {"PET_MASTER_ADDR": "tune-node-0-0.tune", "PET_MASTER_PORT": "23456"}
    arguments = run_entrypoint(tmp_path, fake_torchrun, variables)
    assert arguments == [a.replace("tune-master-0", "tune-node-0-0.tune") for a in TORCHRUN_ARGS]


def test_entrypoint_defaults_to_one_process_on_one_node(tmp_path, fake_torchrun):
    assert run_entrypoint(tmp_path, fake_torchrun, {}) == [
        "--nnodes=1",
        "--nproc_per_node=1",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        "--master_port=29500",
        "-m",
        "kubetune_trainer.train",
        "--config",
        DEFAULT_PATH,
    ]
