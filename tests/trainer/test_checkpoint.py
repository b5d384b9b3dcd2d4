"""Checkpoints and resume: killed runs lose at most one interval, preempted runs lose nothing,
and only checkpoints whose manifest and checksums hold are resumed from."""

import json
import re
import signal
import subprocess
import time

import pytest
import torch

from kubetune.storage import open_store
from kubetune_trainer import checkpoint
from kubetune_trainer.checkpoint import Checkpoint, TrainState
from kubetune_trainer.train import train
from tests.support.training import (
    config_for,
    made_a_step,
    make_job,
    runtime,
    trainer_command,
    trainer_env,
)

# Deterministic: no dropout, so a resumed run can be compared with an uninterrupted one.
RUN = {"lora_dropout": 0.0, "merge_weights": False, "checkpoint_interval_steps": 5}
RESUMED = re.compile(r"resuming from \S+: epoch (\d+), step (\d+) done")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("job"))


@pytest.fixture(scope="module")
def uninterrupted(job):
    return train(config_for(job, output="out-reference", **RUN), runtime(job))


def start(config, root):
    return subprocess.Popen(
        trainer_command(config, root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=trainer_env(root),
    )


def wait_for_checkpoint(out, process, min_step: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.parent.name[5:]) for p in out.glob("checkpoints/step-*/CHECKPOINT.json")]
        if steps and max(steps) >= min_step:
            return max(steps)
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step >= {min_step} within {timeout} s")


def finish(config, root) -> str:
    result = subprocess.run(
        trainer_command(config, root), capture_output=True, text=True, env=trainer_env(root)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def eval_losses(out) -> list[float]:
    return [e["eval_loss"] for e in json.loads((out / "metrics.json").read_text())["epochs"]]


def test_killed_run_resumes_from_its_last_checkpoint_and_ends_as_if_never_killed(
    job, uninterrupted
):
    config = config_for(job, output="out-killed", **RUN)
    out = job / "out-killed"
    process = start(config, job)
    saved = wait_for_checkpoint(out, process, min_step=10)
    process.kill()  # kill -9: no handler runs
    process.wait()
    assert not (out / "MANIFEST.json").exists()

    log = finish(config, job)
    resumed = RESUMED.search(log)
    assert resumed, log[-3000:]
    assert int(resumed[2]) >= saved  # never earlier than the newest complete checkpoint
    assert (out / "MANIFEST.json").exists()
    reference = [e.eval_loss for e in uninterrupted.epochs]
    assert eval_losses(out) == pytest.approx(reference, rel=1e-4)
    assert not (out / "checkpoints").exists()


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_the_rerun_starts_there(
    job, uninterrupted
):
    # No step checkpoints: only the one SIGTERM asks for can explain a mid-epoch resume.
    config = config_for(job, output="out-preempted", **{**RUN, "checkpoint_interval_steps": 0})
    out = job / "out-preempted"
    process = start(config, job)
    deadline = time.monotonic() + 120
    while not made_a_step(out):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    log, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+); the checkpoint resumes from there", log)
    assert stopped, log[-3000:]
    assert "Traceback" not in log
    report = json.loads((out / "progress.json").read_text())  # how it ended, for every reader
    assert (report["state"], report["stop_signal"]) == ("stopped", "SIGTERM")
    assert report["step"] == int(stopped[1]) and report["message"].startswith("stopped by SIGTERM")

    resumed = RESUMED.search(finish(config, job))
    assert resumed and resumed[2] == stopped[1]  # nothing lost
    reference = [e.eval_loss for e in uninterrupted.epochs]
    assert eval_losses(out) == pytest.approx(reference, rel=1e-4)


def saved(step: int) -> Checkpoint:
    state = TrainState(epoch=1, epoch_step=step, step=step, epoch_losses=[1.0] * step)
    weights = {"lora.weight": torch.full((2, 2), float(step))}
    return Checkpoint(state, weights, {"state": {}, "param_groups": []}, {"last_epoch": step}, [])


def test_only_complete_checkpoints_count_and_the_newest_two_are_kept(tmp_path):
    store, uri = open_store(f"file://{tmp_path}/out"), f"file://{tmp_path}/out"
    for step in (5, 10, 15):
        checkpoint.save(store, uri, tmp_path / "staging", saved(step))
    root = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000010", "step-00000015"]

    (root / "step-00000020").mkdir()  # a save killed before its manifest
    (root / "step-00000020" / "weights.safetensors").write_bytes(b"half")
    (root / "step-00000015" / "state.json").write_text("{}")  # size no longer as listed
    assert [m["step"] for _, m in checkpoint.complete(store, uri)] == [10]


def test_a_checkpoint_failing_its_checksums_is_skipped(tmp_path):
    store, uri = open_store(f"file://{tmp_path}/out"), f"file://{tmp_path}/out"
    checkpoint.save(store, uri, tmp_path / "staging", saved(5))
    [(found, manifest)] = checkpoint.complete(store, uri)
    loaded = checkpoint.load(store, found, manifest, tmp_path / "dl")
    assert loaded.state.step == 5 and loaded.state.epoch_losses == [1.0] * 5
    assert torch.equal(loaded.weights["lora.weight"], torch.full((2, 2), 5.0))

    state = tmp_path / "out" / "checkpoints" / "step-00000005" / "state.json"
    state.write_text(state.read_text().replace('"epoch": 1', '"epoch": 9'))  # same size
    assert checkpoint.load(store, found, manifest, tmp_path / "dl2") is None
