"""The exit-code contract of the trainer image (kubetune.api.v1alpha1.exits): the launcher turns
what every rank reported into one exit code and a termination message, through the real
entrypoint, with a scripted torchrun for the combinations and the real trainer end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.api.v1alpha1.exits import ExitCode, retryable
from kubetune_trainer.launch import outcome, record_exit
from tests.support.processes import free_port
from tests.support.training import config_for, make_job

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "trainer-image" / "entrypoint.sh"


def records(tmp_path: Path, *outcomes: tuple[int, str]) -> Path:
    folder = tmp_path / "exits"
    folder.mkdir(parents=True)
    for rank, (code, message) in enumerate(outcomes):
        record_exit(folder, rank, code, message)
    return folder


@pytest.mark.parametrize(
    "ranks, torchrun, expected",
    [
        ([(0, ""), (0, "")], 0, (0, "")),
        # a user error on one rank; torchrun then stops the other (SIGTERM, 143): permanent
        ([(143, "stopped by SIGTERM"), (2, "data.csv: no text")], 1, (2, "data.csv: no text")),
        ([(1, "unexpected KeyError: 'x'"), (2, "bad data")], 1, (2, "bad data")),
        ([(143, "stopped at step 5"), (143, "stopped")], 1, (143, "stopped at step 5")),
        ([(200, "s3://out/: unreachable"), (0, "")], 1, (200, "s3://out/: unreachable")),
        ([(3, "started 5 times")], 1, (3, "started 5 times")),
    ],
)  # fmt: skip
def test_a_permanent_failure_of_any_rank_wins(tmp_path, ranks, torchrun, expected):
    assert outcome(torchrun, records(tmp_path, *ranks)) == expected


def test_a_rank_that_died_without_a_word_is_retryable(tmp_path):
    code, message = outcome(1, records(tmp_path))  # e.g. the OOM killer took a worker
    assert code == ExitCode.INFRASTRUCTURE and retryable(code)
    assert "out of memory" in message.lower() or "OOM" in message
    assert outcome(-9, records(tmp_path / "b"))[0] == 137  # torchrun itself killed


def test_contract_classes():
    assert not any(retryable(c) for c in (1, 2, 3))  # the Training Operator fails the job
    assert all(retryable(c) for c in (ExitCode.INFRASTRUCTURE, 137, 143))


def fake_torchrun(tmp_path: Path, body: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "torchrun"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    log = tmp_path / "termination-log"
    log.write_text("")  # kubelet creates it in a pod; the launcher writes only where it exists
    return {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "KUBETUNE_TERMINATION_LOG": str(log),
    }


def test_entrypoint_exits_by_the_contract_and_writes_the_termination_message(tmp_path):
    record = json.dumps({"rank": 0, "code": 2, "message": "train/x.csv: header row is empty"})
    env = fake_torchrun(tmp_path, f"echo '{record}' > \"$KUBETUNE_EXIT_DIR/rank-0.json\"; exit 1")
    done = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert (tmp_path / "termination-log").read_text() == "train/x.csv: header row is empty"
    assert "kubetune: exit 2: train/x.csv: header row is empty" in done.stderr


def test_entrypoint_forwards_sigterm_to_torchrun(tmp_path):
    # torchrun's workers save a checkpoint on SIGTERM and report 143 (retryable).
    body = (
        'trap \'echo "{\\"rank\\": 0, \\"code\\": 143, \\"message\\": \\"stopped\\"}" '
        '> "$KUBETUNE_EXIT_DIR/rank-0.json"; exit 1\' TERM; '
        f"touch {tmp_path}/started; while true; do sleep 0.1; done"
    )
    env = fake_torchrun(tmp_path, body)
    launcher = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 143


def test_the_real_trainer_fails_once_with_its_data_error(tmp_path):
    """The real trainer under the real torchrun: a data error is exit 2 with its line."""
    root = make_job(tmp_path / "job", samples=20)
    (root / "data" / "train.jsonl").write_text(
        '{"instruction": "x", "context": "", "response": "y"}\n{oops\n'
    )
    config = config_for(root)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json(by_alias=True))
    env = fake_torchrun(tmp_path, 'exec "$(dirname "$0")/../real-torchrun" "$@"')
    (tmp_path / "real-torchrun").symlink_to(Path(sys.executable).parent / "torchrun")
    env |= {"KUBETUNE_CONFIG": str(path), "KUBETUNE_SCRATCH": str(tmp_path / "scratch")}
    env |= {"MASTER_PORT": str(free_port())}
    done = subprocess.run(
        ["bash", str(ENTRYPOINT)], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == ExitCode.USER_ERROR, done.stderr[-3000:]
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith(f"file://{root}/data/train.jsonl, line 2: invalid JSON"), message
    assert "\n" not in message
