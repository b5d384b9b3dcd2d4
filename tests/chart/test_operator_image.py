"""The operator image, checked without Docker: its Dockerfile's contract with the chart's pod,
the build context, and that the operator's code runs where torch cannot be imported."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.trainer.test_image import instructions

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "operator-image" / "Dockerfile"
DOCKERIGNORE = REPO / "operator-image" / "Dockerfile.dockerignore"


def values(instruction: str) -> list[str]:
    return [args for name, args in instructions(DOCKERFILE) if name == instruction]


def copied() -> list[str]:
    """Sources of the COPY instructions that read the build context (not --from a stage)."""
    sources = []
    for args in values("COPY"):
        if not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def test_runs_as_a_fixed_numeric_non_root_user():
    user = values("USER")[-1]
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: runAsNonRoot needs numeric ids"
    assert all(int(part) != 0 for part in user.split(":"))


def test_entrypoint_is_kubetune_operator_in_exec_form():
    (entrypoint,) = values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["kubetune", "operator"]  # the chart passes the flags


def test_installs_the_operator_extra_without_the_trainer_at_the_pins():
    (install,) = [r for r in values("RUN") if "pip install" in r]
    assert re.search(r'pip install -c constraints\.txt "\.\[operator\]"(\s|$)', install), install
    assert "trainer]" not in install
    # The build fails if torch or the trainer package got in.
    assert "for m in ('torch', 'kubetune_trainer')" in install
    assert "kubetune operator --help" in install


def test_copies_the_kubetune_package_and_not_the_trainer():
    assert "operator/kubetune" in copied()
    assert not [source for source in copied() if source.startswith("trainer-image")]


def test_base_image_python_satisfies_requires_python():
    base = dict(a.split("=", 1) for a in values("ARG") if "=" in a)["PYTHON_IMAGE"]
    version = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", base)
    assert version, base
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups()))


def test_no_baked_credentials_and_nothing_written_to_the_root_filesystem():
    variables = dict(re.findall(r"(\w+)=(\S+)", " ".join(values("ENV"))))
    assert variables["PYTHONDONTWRITEBYTECODE"] == "1"
    assert variables["HOME"] == "/tmp"  # the chart mounts an emptyDir there
    declared = set(variables) | {a.split("=")[0] for a in values("ARG")}
    assert not [n for n in declared if re.search(r"AWS_|SECRET|TOKEN|PASSWORD|KEY", n, re.I)]


def test_build_context_is_exactly_what_the_image_copies():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything else (.venv, tests, ~/.aws in a home checkout) stays out
    allowed = sorted(rule[1:] for rule in rules if rule.startswith("!"))
    assert allowed == sorted(copied())


def test_the_copied_files_build_a_wheel_with_the_operator(tmp_path):
    """The same install as the image's, from only the copied files (no network: setuptools is
    in the venv; no trainer-image/ folder at all): the wheel has the operator and the storage
    package it imports, no trainer, and torch and kopf only with their extras."""
    context = tmp_path / "context"
    for source in copied():
        target = context / source
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    command += ["--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(context)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("kubetune-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert not (context / "trainer-image").exists()
    assert {"kubetune/cli/operator_cmd.py", "kubetune/storage/__init__.py"} <= names
    assert not [name for name in names if name.startswith("kubetune_trainer/")]
    required = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]

    def extras_of(package: str) -> set[str]:
        lines = [line for line in required if re.match(rf"Requires-Dist: {package}[ <>=!;]", line)]
        assert lines, package
        return {(re.findall(r'extra == "(\w+)"', line) or [""])[0] for line in lines}

    assert extras_of("torch") == {"trainer"}
    assert extras_of("kopf") == extras_of("kubernetes") == {"operator"}
    assert extras_of("prometheus-client") == {"operator"}
    assert extras_of("boto3") == extras_of("pydantic") == {""}  # both sides: always


BLOCK_TORCH = """
import importlib.abc, sys

class NoTrainingStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "peft", "accelerate", "tqdm",
                                  "kubetune_trainer"}:
            raise ImportError(f"{name} is not in the operator image")

sys.meta_path.insert(0, NoTrainingStack())
import kubetune.controller.handlers, kubetune.controller.finetunejob, kubetune.controller.modelhub
from kubetune.cli.main import main
try:
    main(["operator", "--help"])
except SystemExit as done:
    assert done.code == 0, done.code
"""


def test_operator_runs_without_the_training_stack():
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--all-namespaces" in done.stdout
