"""`kubetune run --local` as a user runs it: the real command on YAML files, the real trainer
on a tiny model, Ctrl-C and the rerun that resumes, and each kind of mistake as one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.training import made_a_step, make_job

REPO = Path(__file__).resolve().parents[2]
# Tiny and quick, yet 80 optimizer steps: a Ctrl-C after the first one lands mid-training.
HYPERPARAMETERS = {
    "instruction_tuned": True,
    "epoch": 2,
    "learning_rate": 0.002,
    "per_device_train_batch_size": 2,
    "max_input_length": 32,
    "merge_weights": False,
    "checkpoint_interval_steps": 0,
}


def hub(root: Path, **model) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "local", "namespace": "ml-platform"},
        "spec": {
            "sharedWith": {"namespaceSelector": {"matchLabels": {"kubetune.io/hub": "local"}}},
            "models": [{"modelId": "tiny-llama", "source": f"file://{root}/model", **model}],
        },
    }


def finetunejob(root: Path, data: str = "data", output: str = "out", **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tiny", "namespace": "team-a"},
        "spec": {
            "model": {
                "hubRef": {"name": "local", "namespace": "ml-platform"},
                "modelId": "tiny-llama",
            },
            "data": {"train": f"file://{root}/{data}"},
            "hyperparameters": HYPERPARAMETERS,
            "output": {"uri": f"file://{root}/{output}"},
            **spec,
        },
    }


def write(path: Path, *documents: dict) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def command(root: Path, job: Path, *extra: str, hub_file: str | None = "hub.yaml") -> list[str]:
    hubs = ["--hub", str(root / hub_file)] if hub_file else []
    return [
        sys.executable,
        "-m",
        "kubetune.cli.main",
        "run",
        str(job),
        *hubs,
        "--local",
        "--scratch",
        str(root / "scratch"),
        "--namespace-label",
        "kubetune.io/hub=local",
        *extra,
    ]


def kubetune(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = make_job(tmp_path_factory.mktemp("local"), samples=100)
    write(root / "hub.yaml", hub(root))
    write(root / "job.yaml", finetunejob(root))
    return root


@pytest.fixture(scope="module")
def runs(root):
    """Ctrl-C once the trainer has made its first step, then the same command again."""
    args = command(root, root / "job.yaml")
    first = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not made_a_step(root / "out"):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C does
    stdout, stderr = first.communicate(timeout=180)
    stopped = subprocess.CompletedProcess(args, first.returncode, stdout, stderr)
    trainer_log = (root / "scratch" / "team-a" / "tiny" / "trainer.log").read_text()
    report = json.loads((root / "out" / "progress.json").read_text())
    return stopped, trainer_log, report, kubetune(args)


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(root, runs):
    stopped, stopped_log, report, resumed = runs
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    said = re.search(
        r"kubetune: stopped at step (\d+); run the same command again to resume", stopped.stderr
    )
    assert said, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr + stopped_log
    # What the command said is what the trainer recorded (progress.json), and what it logged.
    assert (report["state"], report["stop_signal"], report["step"]) == (
        "stopped", "SIGINT", int(said[1])
    )  # fmt: skip
    assert f"stopped by SIGINT at step {said[1]}" in stopped_log
    assert "training: 80 rows (80 samples) on 1 rank(s) x 2 epochs = 80 steps; 20 validation " \
        "samples" in stopped.stderr  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"resuming from file://{root}/out/checkpoints/step-{int(said[1]):08d}: "
        in (root / "scratch" / "team-a" / "tiny" / "trainer.log").read_text()
    )
    assert f"resuming from file://{root}/out/checkpoints/" in resumed.stderr  # shown, too


def test_a_finished_run_prints_a_summary_and_leaves_complete_artifacts(root, runs):
    *_, resumed = runs
    out = root / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "MANIFEST.json").read_text())
    adapter = manifest["sizes"]["adapter"]
    assert 10_000 < adapter < 1_000_000  # kB: r=8 on a hidden size of 64
    assert resumed.stdout.splitlines() == [
        f"done: best epoch {metrics['best_epoch']} of 2, 80 steps",
        f"  train loss {metrics['train_loss']:.4f}   eval loss {metrics['eval_loss']:.4f}   "
        f"perplexity {metrics['eval_perplexity']:.2f}   "
        f"{metrics['tokens_per_second']:,.0f} tokens/s",
        f"  artifacts: file://{out}  (adapter/ {adapter / 1e3:.1f} kB, loss_curve.png, "
        "metrics.json)",
        f"  details:   kubetune report file://{out}",
    ]
    losses = [e["eval_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]
    # The job's copies of model and data are gone; the config and the log stay for the user.
    workdir = root / "scratch" / "team-a" / "tiny"
    assert {p.name for p in workdir.iterdir()} <= {"config.json", "trainer.log", "exits"}
    listed = {f["path"] for f in manifest["files"]}
    assert {"loss_curve.png", "loss_curve.csv", "adapter/adapter_model.safetensors"} <= listed
    # The curve spans the stop: every step once, the steps before Ctrl-C included.
    steps = [int(line.split(",")[0]) for line in (out / "loss_curve.csv").read_text().split()[1:]]
    assert steps == list(range(1, 81))
    assert "Traceback" not in resumed.stderr


def test_report_reads_the_run_output(root, runs):
    result = kubetune([sys.executable, "-m", "kubetune.cli.main", "report", str(root / "out")])
    assert result.returncode == 0, result.stderr
    assert "FineTuneJob team-a/tiny" in result.stdout
    assert re.search(r"^\s+loss_curve\.png\s+\d", result.stdout, re.M)


def test_a_data_problem_the_trainer_finds_is_one_line(root):
    (root / "bad-data").mkdir(exist_ok=True)
    (root / "bad-data" / "train.jsonl").write_text("not json\n")
    job = write(root / "bad-data.yaml", finetunejob(root, data="bad-data", output="out-bad"))
    result = kubetune(command(root, job))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        f"kubetune: error: file://{root}/bad-data/train.jsonl, line 1: invalid JSON "
        "(Expecting value)"
    )
    assert result.stderr.count("kubetune: error:") == 1
    assert "Traceback" not in result.stderr
    report = json.loads((root / "out-bad" / "progress.json").read_text())
    assert report["state"] == "failed"
    assert report["message"] == result.stderr.splitlines()[-1].removeprefix("kubetune: error: ")


def test_a_rerun_of_a_finished_job_says_so(root, runs):
    result = kubetune(command(root, root / "job.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"kubetune: file://{root}/out holds this job's finished artifacts already" in (
        result.stderr
    )
    assert result.stdout.startswith("done: best epoch ")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("bad field", "job.yaml: FineTuneJob/tiny: spec.hyperparameters.epoch: 0: must be >= 1"),
        ("bad YAML", "job.yaml: document 1: invalid YAML: line 2, column 1: did not find "
         "expected ',' or ']'"),
        ("not shared", "HubAccessDenied: ModelHub ml-platform/local does not exist or is not "
         "shared with namespace team-a: its spec.sharedWith must list the namespace or select it "
         "by label"),
        ("EULA", "EulaNotAccepted: model 'tiny-llama' requires accepting its EULA (version 1, "
         "https://example.com/eula): set spec.acceptEula: true"),
        ("no hub file", "HubNotFound: ModelHub ml-platform/local is not among the hubs given "
         "(none): pass the YAML file that defines it with --hub HUB.yaml"),
        ("model missing", "model 'tiny-llama' (ModelHub ml-platform/local): source: "
         "file:///nowhere/model: no such file or folder on this machine"),
        ("not local", "only local runs so far: add --local, or kubectl apply -f the job"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_and_no_trainer_starts(tmp_path, root, case, expected):
    job = finetunejob(root)
    hub_doc = hub(root)
    hub_file = "hub.yaml"
    if case == "bad field":
        job["spec"]["hyperparameters"] = {**HYPERPARAMETERS, "epoch": 0}
    if case == "not shared":
        hub_doc["spec"]["sharedWith"] = {"namespaces": ["team-b"]}
    if case == "EULA":
        hub_doc["spec"]["models"][0]["eula"] = {
            "required": True, "url": "https://example.com/eula", "version": "1"
        }  # fmt: skip
    if case == "no hub file":
        hub_file = None
    if case == "model missing":
        hub_doc["spec"]["models"][0]["source"] = "file:///nowhere/model"
    path = write(tmp_path / "job.yaml", job)
    if case == "bad YAML":
        path.write_text("spec: [unclosed\n")
    write(tmp_path / "hub.yaml", hub_doc)
    args = command(tmp_path, path, hub_file=hub_file)
    if case == "not local":
        args.remove("--local")
    result = kubetune(args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kubetune: error: "), result.stderr
    assert expected in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "scratch").exists()  # refused before any trainer was started
