"""Trainer parts from a package of their own, as a user adds them: the example plug-in package
(examples/plugins/kubetune-example-plugins) pip-installed into a folder of its own, its own
tests, its FineTuneJob through `kubetune run --local` with the real trainer, the check its
Dockerfile builds with, and the one-line errors of unknown parts, bad options and broken entry
points, before anything is downloaded."""

import csv
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune import demo
from kubetune.api.v1alpha1.exits import ExitCode

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "plugins" / "kubetune-example-plugins"
JOB = PACKAGE / "qa-faq.yaml"
HUB = REPO / "examples" / "quickstart" / "hub.yaml"
DATA = f"{demo.DEFAULT_DIR.as_uri()}/qa-csv/"  # where qa-faq.yaml's comment copies the data


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The package installed as the Dockerfile installs it: pip, no dependencies."""
    root = tmp_path_factory.mktemp("plugins")
    source = root / "source"  # a copy: pip builds in the tree, leaving build/ and *.egg-info
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if importlib.util.find_spec("setuptools") is not None:
        isolation = ["--no-build-isolation", "--no-index"]  # setuptools is here: offline
    else:
        isolation = []  # pip fetches setuptools for the build, from its index or cache
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    command += ["--no-deps", *isolation, "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (target / "kubetune_example_plugins" / "qa_csv.py").is_file()
    return target


def environment(*paths: Path) -> dict[str, str]:
    """This environment with `paths` importable, one torch thread (as `make demo`), no .pyc
    files written beside the sources."""
    pythonpath = [str(p) for p in paths] + [os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, pythonpath)),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_the_package_own_tests_pass_once_installed(site, tmp_path):
    copy = shutil.copytree(PACKAGE / "tests", tmp_path / "package" / "tests")
    shutil.copy(PACKAGE / "pyproject.toml", copy.parent)  # its pytest settings
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        command, cwd=copy.parent, env=environment(site), capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout) and "skipped" not in done.stdout


# --- the example job, end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """The demo model as `python -m kubetune.demo --dir` builds it, and the example's data
    copied where the job reads it."""
    folder = tmp_path_factory.mktemp("quickstart")
    assert demo.main(["--dir", str(folder)]) == 0
    (folder / "qa-csv").mkdir()
    shutil.copy(PACKAGE / "data" / "service-qa.csv", folder / "qa-csv")
    return folder


def moved(path: Path, folder: Path) -> dict:
    """A YAML file of the examples with its /tmp/kubetune-quickstart URIs moved to `folder`."""
    return yaml.safe_load(path.read_text().replace(demo.DEFAULT_DIR.as_uri(), folder.as_uri()))


def kubetune_command(job: dict, hub: dict, folder: Path) -> list[str]:
    """`kubetune run JOB --hub HUB --local` on these documents, written to `folder`."""
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    (folder / "hub.yaml").write_text(yaml.safe_dump(hub))
    command = [sys.executable, "-m", "kubetune.cli.main", "run", str(folder / "job.yaml")]
    command += ["--hub", str(folder / "hub.yaml"), "--local"]
    return command + ["--scratch", str(folder / "scratch")]


def test_the_example_job_names_the_data_its_comment_copies():
    text = JOB.read_text()
    spec = yaml.safe_load(text)["spec"]
    assert spec["data"]["train"] == DATA
    assert f"cp examples/plugins/kubetune-example-plugins/data/service-qa.csv {DATA[7:]}" in text
    assert spec["model"]["hubRef"]["name"] == yaml.safe_load(HUB.read_text())["metadata"]["name"]


def test_the_example_job_trains_with_its_format_and_stop_at_loss_ends_it(
    site, quickstart, tmp_path
):
    job, hub = moved(JOB, quickstart), moved(HUB, quickstart)
    command = kubetune_command(job, hub, tmp_path)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=environment(site), cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]

    out = quickstart / "out" / "qa-faq"
    metrics = json.loads((out / "metrics.json").read_text())
    (selected,) = job["spec"]["trainer"]["callbacks"]
    threshold, window = selected["options"]["threshold"], selected["options"]["window"]
    stopped = re.fullmatch(
        rf"stop-at-loss: mean train loss ([\d.]+) of the last {window} steps is under "
        rf"{threshold:g} \(step \d+\)",
        metrics["stopped_early"] or "",
    )
    assert stopped, metrics["stopped_early"]
    assert float(stopped[1]) < threshold
    assert len(metrics["epochs"]) < job["spec"]["hyperparameters"]["epoch"]  # ended early
    with open(out / "loss_curve.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == metrics["steps"]
    assert losses[0] > 2 * threshold  # the loss fell from there to under the threshold
    evals = [e["eval_loss"] for e in metrics["epochs"]]
    assert evals[-1] < evals[0]
    # The format's samples: 240 rows, a fifth held out (validation_split_ratio 0.2).
    assert "data: 192 train, 48 validation samples" in done.stderr


# --- mistakes: one line, exit 2, nothing downloaded ------------------------------------------

BROKEN_MODULE = "kubetune_broken_plugin"


def broken_plugin(folder: Path) -> Path:
    """An installed distribution whose callback entry point raises on import."""
    folder.mkdir()
    (folder / f"{BROKEN_MODULE}.py").write_text('raise RuntimeError("this plug-in is broken")\n')
    info = folder / f"{BROKEN_MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kubetune-broken-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[kubetune.callbacks]\nexploding = {BROKEN_MODULE}:PART\n"
    )
    return folder


MISTAKES = {
    "unknown callback": (
        {"callbacks": [{"name": "stop-at-los"}]},
        "spec.trainer.callbacks[0].name: unknown callback 'stop-at-los' (known: checkpointer, "
        "early-stopping, log, loss-curve, mlflow, progress, stop-at-loss, stop-on-signal, "
        "tensorboard",
    ),
    "bad callback options": (
        {"callbacks": [{"name": "stop-at-loss", "options": {"threshold": 0, "windw": 3}}]},
        "spec.trainer.callbacks[0].options.threshold: Input should be greater than 0 (got 0); "
        "spec.trainer.callbacks[0].options.windw: Extra inputs are not permitted (got 3)",
    ),
    "bad format options": (
        {"dataFormat": {"name": "qa-csv", "options": {"prompt": "Q: {question} A: {answer}"}}},
        "spec.trainer.dataFormat.options.prompt: the prompt names the answer column {answer}: "
        "the model would see the answer",
    ),
    "broken entry point": (
        {},
        f"entry point 'exploding' in 'kubetune.callbacks' ({BROKEN_MODULE}:PART) does not load: "
        "RuntimeError: this plug-in is broken",
    ),
}


@pytest.fixture(scope="module")
def mistakes(site, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Each mistake's `kubetune run --local`, all at once (each spends its seconds importing
    the training stack). Model and data are empty folders: had the trainer downloaded and read
    them before choosing its parts, it would have failed on them, with another message."""
    started = {}
    for case, (change, _) in MISTAKES.items():
        folder = tmp_path_factory.mktemp(case.replace(" ", "-"))
        job, hub = moved(JOB, folder), moved(HUB, folder)
        job["spec"]["trainer"].update(change)
        for channel in ("model", "data"):
            (folder / channel).mkdir()
        hub["spec"]["models"][0]["source"] = (folder / "model").as_uri()
        job["spec"]["data"]["train"] = (folder / "data").as_uri()
        job["spec"]["output"]["uri"] = (folder / "out").as_uri()
        paths = [site, broken_plugin(folder / "broken")] if case == "broken entry point" else [site]
        command = kubetune_command(job, hub, folder)
        process = subprocess.Popen(
            command, cwd=REPO, env=environment(*paths), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        started[case] = (command, process, folder)
    done = {}
    for case, (command, process, folder) in started.items():
        stdout, stderr = process.communicate(timeout=240)
        done[case] = (
            subprocess.CompletedProcess(command, process.returncode, stdout, stderr),
            folder,
        )
    return done


@pytest.mark.parametrize("case", MISTAKES)
def test_a_bad_part_is_one_line_before_anything_is_downloaded(mistakes, case):
    done, folder = mistakes[case]
    assert done.returncode == ExitCode.USER_ERROR, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"kubetune: error: {MISTAKES[case][1]}"), last
    assert done.stderr.count("kubetune: error:") == 1 and "Traceback" not in done.stderr
    scratch = folder / "scratch"
    assert not [p for p in scratch.rglob("*") if p.name in ("model", "data")]  # no download
    assert not (folder / "out").exists()  # nor the output claimed


# --- the image ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def test_the_image_adds_the_package_to_the_bundled_trainer_and_checks_its_parts(site):
    ours = instructions(PACKAGE / "Dockerfile")
    bundled = instructions(REPO / "trainer-image" / "Dockerfile")
    args = [value.split("=")[0] for name, value in ours if name == "ARG"]
    assert [value for name, value in ours if name == "FROM"] == ["${TRAINER_IMAGE}:${TRAINER_TAG}"]
    assert {"TRAINER_IMAGE", "TRAINER_TAG"} <= set(args)
    # It ends as the bundled image does: same user, same working folder.
    for instruction in ("USER", "WORKDIR"):
        last = [value for name, value in ours if name == instruction][-1]
        assert last == [value for name, value in bundled if name == instruction][-1]
    (run,) = [value for name, value in ours if name == "RUN"]
    install, check, *_ = [shlex.split(command) for command in run.split(" && ")]
    assert install[:3] == ["pip", "install", "--no-deps"]
    # The build's own check passes where the package is installed, and fails where it is not.
    assert check[:2] == ["python", "-c"]
    check = [sys.executable, *check[1:]]
    passed = subprocess.run(check, env=environment(site), capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr
    failed = subprocess.run(check, env=environment(), capture_output=True, text=True)
    assert "unknown data format 'qa-csv'" in failed.stderr
