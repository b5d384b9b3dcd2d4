"""The two sides of the one distribution stay apart (DESIGN.md, Layout): the trainer and
`kubetune run --local` work where only the [trainer] extra is installed (no kopf, kubernetes
client or prometheus_client), and no operator or CLI module imports the trainer's package.
Each check runs in a fresh interpreter whose imports of the other side are refused."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.training import make_job

REPO = Path(__file__).resolve().parents[1]
OPERATOR_STACK = ("kopf", "kubernetes", "prometheus_client")
TRAINER = "kubetune_" + "trainer"  # spelled so that a grep of operator/ and tests finds it here

REFUSE = """
import importlib.abc, sys

class Refused(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {refused!r}:
            # What a missing package raises; the message says why it is missing.
            raise ModuleNotFoundError(f"No module named {{name!r}} (refused here)", name=name)

sys.meta_path.insert(0, Refused())
"""

IMPORT_ALL = """
import importlib, pkgutil
package = importlib.import_module({package!r})
names = [m.name for m in pkgutil.walk_packages(package.__path__, {package!r} + ".")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""


def python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def test_the_trainer_imports_nothing_of_the_operators_stack():
    refuse = REFUSE.format(refused=set(OPERATOR_STACK))
    code = refuse + IMPORT_ALL.format(package=TRAINER) + "import kubetune_trainer.train\n"
    done = python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) >= 15  # every module of the trainer, not a few


def test_what_the_trainer_imports_of_kubetune_needs_no_operator_stack():
    refuse = REFUSE.format(refused=set(OPERATOR_STACK))
    code = refuse + "import kubetune\n"
    for package in ("kubetune.api", "kubetune.storage"):
        code += IMPORT_ALL.format(package=package)
    done = python(code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kubetune_operator_without_the_operator_extra_says_what_to_install():
    code = REFUSE.format(refused=set(OPERATOR_STACK))
    code += "from kubetune.cli.main import main\nsys.exit(main(['operator']))\n"
    done = python(code)
    assert done.returncode == 2
    assert done.stderr == (
        "kubetune: error: the operator needs kopf: pip install 'kubetune[operator]'\n"
    )


def test_no_operator_or_cli_module_imports_the_trainer():
    refuse = REFUSE.format(refused={TRAINER})
    code = refuse + IMPORT_ALL.format(package="kubetune")
    code += "import kubetune.controller.handlers, kubetune.cli.main\n"
    done = python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) >= 40


def test_kubetune_run_local_works_with_the_trainer_extra_only(tmp_path):
    """The CLI and the trainer it starts, both with the operator's stack refused (through a
    sitecustomize module, which every Python process on PYTHONPATH runs first)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(REFUSE.format(refused=set(OPERATOR_STACK)))
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    refused = subprocess.run([sys.executable, "-c", "import kopf"], env=env, capture_output=True)
    assert refused.returncode != 0 and b"refused here" in refused.stderr  # the hook is in force

    root = make_job(tmp_path, samples=16)
    model = {"hubRef": {"name": "local", "namespace": "ml-platform"}, "modelId": "tiny"}
    hyperparameters = {"instruction_tuned": True, "epoch": 1, "max_input_length": 32,
                       "merge_weights": False, "checkpoint_interval_steps": 0}  # fmt: skip
    documents = [
        {"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
         "metadata": {"name": "local", "namespace": "ml-platform"},
         "spec": {"sharedWith": {"namespaces": ["team-a"]},
                  "models": [{"modelId": "tiny", "source": f"file://{root}/model"}]}},
        {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
         "metadata": {"name": "tiny", "namespace": "team-a"},
         "spec": {"model": model, "data": {"train": f"file://{root}/data"},
                  "hyperparameters": hyperparameters,
                  "output": {"uri": f"file://{root}/out"}}},
    ]  # fmt: skip
    (root / "job.yaml").write_text(yaml.safe_dump_all(documents))
    command = [sys.executable, "-m", "kubetune.cli.main", "run", str(root / "job.yaml")]
    command += ["--local", "--scratch", str(root / "scratch")]  # the hub is in the job's file
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("done: best epoch 1 of 1"), done.stdout
    assert (root / "out" / "MANIFEST.json").exists()
