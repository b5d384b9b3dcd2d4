"""The trainer under faults, run as a pod runs it (`python -m kubetune_trainer.train`, its own
process, one CPU thread) on a tiny Llama whose model, data and output all live in a real S3
server (moto over HTTP): kill -9 at random points and restarted with the same command; the S3
endpoint gone for 20 s in the middle of a checkpoint upload and of the final artifact upload
(s3_faults.py, a proxy in front of moto); and the scratch volume full (a small tmpfs; root only).

What must hold: every run ends with complete artifacts (MANIFEST.json never written while a file
it lists is missing), no checkpoint is marked complete while it is not, a restart resumes from
the newest complete checkpoint, and the result matches an uninterrupted run.

Random points come from a seed, printed and recorded as a figure; KUBETUNE_FAULT_SEED=<n>
replays a run's kill schedule (the trainer's own timing still varies).
"""

import errno
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from botocore.config import Config

from kubetune.api.v1alpha1 import Hyperparameters, TrainingMetrics
from kubetune.storage import NoSpace, StorageError, open_store
from kubetune_trainer import checkpoint
from kubetune_trainer.artifacts import export
from kubetune_trainer.checkpoint import Checkpoint, TrainState
from kubetune_trainer.model import load_model, load_tokenizer
from kubetune_trainer.models import MODELS
from kubetune_trainer.outages import Patient
from kubetune_trainer.recipe import model_bytes
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.train import train
from tests.reliability.s3_faults import Outage, OutageProxy
from tests.reliability.trainer_runs import (
    RUN,
    ManifestWatch,
    artifacts,
    checkpoint_steps,
    make_s3_job,
)
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    ACCESS_KEY_ID,
    SECRET,
    make_bucket,
    s3_server_fixture,
)

# A resumed run replays the same batches with the same RNG and optimizer state: only the order
# of float additions may differ (one CPU thread here, two in the reference), far below this.
LOSS_TOLERANCE = 1e-4  # relative, on each epoch's eval loss
PAGE = 4096  # tmpfs hands out space in pages


def seed() -> int:
    value = int(os.environ.get("KUBETUNE_FAULT_SEED") or random.randrange(2**31))
    print(f"fault seed: {value} (KUBETUNE_FAULT_SEED={value} replays this schedule)")
    return value


@pytest.fixture(scope="module")
def s3(s3_server: str, tmp_path_factory) -> str:
    """The AWS_* variables for the whole module (the reference run is shared by its tests)."""
    isolated = tmp_path_factory.mktemp("aws")  # no ~/.aws profile may leak in
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", s3_server)
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", str(isolated / "config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated / "credentials"))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            env.delenv(name, raising=False)
        yield s3_server


@pytest.fixture(scope="module")
def job(s3: str, tmp_path_factory):
    return make_s3_job(tmp_path_factory.mktemp("job"), make_bucket(), s3)


@pytest.fixture(scope="module")
def reference(job) -> TrainingMetrics:
    """Metrics of the same job run once, uninterrupted (in this process: no startup to pay)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runtime = Runtime.from_env({"KUBETUNE_SCRATCH": str(job.root / "scratch-reference")})
        return train(job.config("out-reference", **RUN), runtime)
    finally:
        torch.set_num_threads(threads)


def eval_losses(job, output: str) -> list[float]:
    metrics = job.client().get_object(Bucket=job.bucket, Key=f"{output}/metrics.json")
    return [e["eval_loss"] for e in json.loads(metrics["Body"].read())["epochs"]]


def assert_complete(job, output: str) -> None:
    """MANIFEST.json is there, lists every file with its size, and the checkpoints are gone."""
    present, problems = artifacts(job.client(), job.bucket, output)
    assert present and not problems, problems
    assert checkpoint_steps(job, output) == ([], [], [])


def assert_matches(job, output: str, reference: TrainingMetrics, figures, name: str) -> None:
    expected = [e.eval_loss for e in reference.epochs]
    got = eval_losses(job, output)
    figures.record(
        f"{name}: eval loss max difference",
        max(abs(a - b) for a, b in zip(got, expected, strict=True)),
    )
    assert got == pytest.approx(expected, rel=LOSS_TOLERANCE)


# kill -9 -------------------------------------------------------------------------------------


def kill_points(rng: random.Random, kills: int, total: int) -> list[tuple[int, float]]:
    """`kills` points of a run of `total` steps, in order: a step to reach, then a pause that
    lands mid-step, mid-upload or mid-prune. Step 0 stands for the startup (imports, downloads,
    tokenizing), total + 1 for the final export (after the last eval)."""
    return [
        (
            step,
            rng.uniform(0.2, 3.0) if step == 0 else rng.uniform(0, 0.15 if step <= total else 0.05),
        )
        for step in sorted(rng.sample(range(total + 2), kills))
    ]


def at_point(trainer, step: int, total: int) -> bool:
    if step > total:
        return bool(trainer.seen(r"epoch (\d+)/\1:")) or trainer.resumed == total
    return trainer.step >= step


def resumed_step(trainer, reached: int) -> int:
    """Where a restarted run took up the work: its checkpoint's step, 0 for a clean start,
    `reached` when the killed run had finished all but its cleanup."""
    trainer.wait_until(
        lambda: trainer.resumed is not None or trainer.step or trainer.seen("complete already")
    )
    if trainer.seen("complete already"):
        return reached
    return trainer.resumed or 0


@pytest.mark.parametrize(
    "kills",
    [pytest.param(10, id="10-kills"), pytest.param(40, id="40-kills", marks=pytest.mark.soak)],
)
def test_kill_9_at_random_points_loses_at_most_an_interval_and_ends_as_if_never_killed(
    kills, job, reference, figures
):
    name, output, fault_seed = f"kill -9 x{kills}", f"out-kill-{kills}", seed()
    total, interval = reference.steps, RUN["checkpoint_interval_steps"]
    points = kill_points(random.Random(fault_seed), kills, total)
    print(f"{name}: kill points (step, then seconds): {[(s, round(p, 3)) for s, p in points]}")
    figures.record(f"{name}: seed", fault_seed)
    config = job.config(output, **RUN)
    lost, codes, torn, before = [], [], 0, None  # before: (step reached, newest complete)
    with ManifestWatch(job, output) as watch:
        for point, pause in [*points, (None, 0.0)]:
            trainer = job.start(config)
            if before is not None:
                reached, newest = before
                resumed = resumed_step(trainer, reached)
                assert newest <= resumed <= reached, (before, trainer.log[-3000:])
                lost.append(reached - resumed)
            if point is None:
                break
            ready = trainer.wait_until(lambda t=trainer, p=point: at_point(t, p, total))
            time.sleep(pause)
            assert ready and trainer.process.poll() is None, f"ended first:\n{trainer.log[-3000:]}"
            trainer.kill()
            codes.append(trainer.process.returncode)
            complete, marked, partial = checkpoint_steps(job, output)
            assert marked == complete, "a CHECKPOINT.json whose files are not all there"
            torn += bool(partial)
            assert not artifacts(job.client(), job.bucket, output)[1]
            newest = max(complete, default=0)
            before = (max(trainer.step, newest), newest)  # killed in startup: where it stood
        codes.append(trainer.finish())
        assert codes[-1] == 0, trainer.log[-3000:]
    figures.record(f"{name}: kills injected", codes.count(-signal.SIGKILL))
    figures.record(f"{name}: trainer runs", len(codes))
    figures.record(f"{name}: runs that finished", codes.count(0))
    figures.record(f"{name}: steps lost in total", sum(lost))
    figures.record(f"{name}: steps lost, most in one kill", max(lost))
    figures.record(f"{name}: steps in the job", total)
    figures.record(f"{name}: kills that left a torn checkpoint (skipped on resume)", torn)
    figures.record(f"{name}: eval loss tolerance (relative)", LOSS_TOLERANCE)
    figures.record(f"{name}: MANIFEST.json polls while running", watch.polls)
    assert watch.seen and not watch.problems, watch.problems
    assert max(lost) <= interval  # a checkpoint every `interval` steps: never more to redo
    assert_complete(job, output)
    assert_matches(job, output, reference, figures, name)


# S3 outage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(20, id="20-s"), pytest.param(120, id="120-s", marks=pytest.mark.soak)],
)
def test_s3_outages_in_checkpoint_and_artifact_uploads_are_ridden_out(
    seconds, job, reference, figures
):
    """One run, two outages: from a checkpoint's state.json PUT (optimizer.pt is up already,
    CHECKPOINT.json is not) and from the adapter's weights PUT (adapter_config.json is up,
    MANIFEST.json is not). Connections refused in the first, accepted and reset in the second."""
    output, name = f"out-outage-{seconds}", f"S3 outages of {seconds} s"
    prefix = f"PUT /{job.bucket}/{output}/".encode()
    outages = [
        Outage(prefix + rb"checkpoints/\S+/state\.json", seconds),
        Outage(prefix + rb"adapter/adapter_model\.", seconds, "reset"),
    ]
    host, port = job.endpoint.removeprefix("http://").split(":")
    started = time.monotonic()
    with OutageProxy((host, int(port)), outages) as proxy, ManifestWatch(job, output) as watch:
        trainer = job.start(job.config(output, **RUN), endpoint=proxy.url)
        code = trainer.finish(timeout=2 * seconds + 240)
    assert code == 0, trainer.log[-5000:]
    for outage, what in zip(outages, ("checkpoint upload", "artifact upload"), strict=True):
        assert outage.ended, f"the {what} outage never began: no {outage.trigger!r} seen"
        figures.record(f"{name}: {what}: outage seconds", round(outage.ended - outage.started, 1))
        figures.record(f"{name}: {what}: connections cut or turned away", outage.turned_away)
        lag = round(outage.back - outage.ended, 1)
        figures.record(
            f"{name}: {what}: seconds from the endpoint's return to the next request", lag
        )
    retries = [line for line in trainer.lines if "retrying in" in line]
    for cut in ("/checkpoints/step-00000005/state.json: ", "/adapter/adapter_model.safetensors: "):
        assert any(cut in line for line in retries), f"no retry of {cut}:\n{trainer.log[-5000:]}"
    figures.record(f"{name}: retries logged by the trainer", len(retries))
    figures.record(f"{name}: run seconds, both outages included", round(time.monotonic() - started))
    figures.record(f"{name}: runs that finished", 1)
    figures.record(f"{name}: MANIFEST.json polls while running", watch.polls)
    assert watch.seen and not watch.problems, watch.problems
    assert_complete(job, output)
    assert_matches(job, output, reference, figures, name)


def test_an_outage_that_outlasts_the_budget_fails_naming_the_uri(job):
    quick = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1)
    host, port = job.endpoint.removeprefix("http://").split(":")
    never = Outage(rb"PUT /\S+/checkpoints/", seconds=3600)
    with OutageProxy((host, int(port)), [never]) as proxy:
        store = Patient(open_store("s3://", {"endpoint_url": proxy.url}, config=quick), seconds=3)
        uri = f"s3://{job.bucket}/out-gone/checkpoints/step-00000005/state.json"
        for _ in range(5):  # it answered once (a first try through the new proxy failed once)
            try:
                store.write_bytes(f"s3://{job.bucket}/out-gone/job.json", b"{}")
                break
            except StorageError:
                time.sleep(0.5)
        assert store.answered
        started = time.monotonic()
        with pytest.raises(StorageError) as raised:
            store.write_bytes(uri, b"{}")
    assert 3 <= time.monotonic() - started < 10
    assert str(raised.value).startswith(f"{uri}: endpoint unreachable: {proxy.url}")
    assert str(raised.value).endswith("still failing after 3 s of retries")


def test_an_endpoint_that_never_answered_fails_fast_even_when_patient(job):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    quick = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1)
    store = Patient(open_store("s3://", {"endpoint_url": closed}, config=quick))
    started = time.monotonic()
    with pytest.raises(StorageError, match="endpoint unreachable"):
        store.read_bytes(f"s3://{job.bucket}/model/config.json")
    assert time.monotonic() - started < 10  # a wrong URL is not an outage: no 5-minute wait


# Full scratch volume ------------------------------------------------------------------------


@pytest.fixture
def small_volume(tmp_path):
    """mount(size) -> a fresh tmpfs of that size, unmounted after the test. Needs root."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a small tmpfs needs root; this is uid {os.geteuid()}")
        path = tmp_path / f"volume-{len(mounted)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


class Ballast:
    """A file that takes up a volume's free space: fill(leave) tops it up until the volume is
    full, then gives back `leave` bytes (whole pages on a tmpfs)."""

    def __init__(self, volume: Path):
        self.path = volume / "ballast"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def fill(self, leave: int = 0) -> None:
        chunk = 1 << 20
        while chunk:
            try:
                os.write(self.fd, bytes(chunk))
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
                chunk //= 2
        if leave:
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - leave)

    def remove(self) -> None:
        os.close(self.fd)
        self.path.unlink()


def test_a_full_scratch_volume_mid_run_ends_in_one_line_and_the_rerun_resumes(
    job, reference, figures, small_volume
):
    volume, output = small_volume("32m"), "out-disk-full"
    config = job.config(output, **RUN)
    trainer, ballast = job.start(config, scratch=volume), Ballast(volume)
    assert trainer.wait_until(lambda: trainer.seen(r"checkpoint: step \d+ .* saved")), trainer.log
    os.kill(trainer.process.pid, signal.SIGSTOP)  # fill the volume while it stands still
    ballast.fill()
    os.kill(trainer.process.pid, signal.SIGCONT)
    while trainer.process.poll() is None:  # keep it full: an upload's cleanup frees space
        ballast.fill()
        time.sleep(0.01)
    assert trainer.finish() == 2, trainer.log[-3000:]
    error = next(line for line in trainer.lines if " ERROR " in line)
    assert f"ERROR [rank 0] {volume}/" in error and "no space left on device" in error, error
    assert "MiB" in error and "Traceback" not in trainer.log, trainer.log[-3000:]
    complete, marked, _ = checkpoint_steps(job, output)
    assert complete and marked == complete  # the step that failed was never marked complete
    assert artifacts(job.client(), job.bucket, output) == (False, [])
    figures.record(
        "full scratch: error", error.split("] ", 1)[1].strip().replace(str(volume), "$SCRATCH")
    )

    ballast.remove()
    rerun = job.start(config, scratch=volume)
    assert rerun.finish() == 0, rerun.log[-3000:]
    assert rerun.resumed == max(complete)  # the newest complete checkpoint, not a torn one
    figures.record("full scratch: rerun resumed from step", rerun.resumed)
    assert_complete(job, output)
    assert_matches(job, output, reference, figures, "full scratch")


def saved(weights: int, best: int | None = None) -> Checkpoint:
    """A checkpoint with float32 tensors of the given sizes in bytes."""
    state = TrainState(epoch=1, epoch_step=5, step=5)
    state.best_weights = {"lora.weight": torch.ones(best // 4)} if best else None
    return Checkpoint(state, {"lora.weight": torch.ones(weights // 4)}, {}, {"last_epoch": 5}, [])


@pytest.mark.parametrize(
    ("writer", "checkpoint_"),
    [
        # Free space covers what the tensors need, rounded up to a page, but not each file's
        # header and its own rounding: the write fails part-way, where no check foresaw it.
        ("safetensors (best.safetensors)", saved(weights=256, best=16 * PAGE)),
        ("torch.save (optimizer.pt)", saved(weights=16 * PAGE)),
    ],
)
def test_a_checkpoint_write_failing_on_a_full_volume_is_never_marked_complete(
    writer, checkpoint_, job, small_volume
):
    volume, uri = small_volume("1m"), job.output_uri(f"out-write-{writer.split()[0]}")
    store, ballast = open_store(uri), Ballast(volume)
    ballast.fill(leave=17 * PAGE)
    with pytest.raises(NoSpace) as raised:
        checkpoint.save(store, uri, volume / "staging", checkpoint_)
    assert raised.value.started, f"{writer}: refused before writing; the sizes need a look"
    assert str(raised.value).startswith(f"{volume}/staging/step-00000005: no space left on device")
    assert not (volume / "staging" / "step-00000005").exists()  # the torn files are gone
    assert store.list_files(uri) == []  # nothing uploaded, nothing marked complete

    ballast.fill()  # now less than the tensors: refused before any write
    with pytest.raises(NoSpace, match=r"at least 0\.1 MiB needed, 0\.0 MiB free now"):
        checkpoint.save(store, uri, volume / "staging", checkpoint_)


def test_a_download_that_cannot_fit_names_the_folder_and_the_sizes(job, small_volume):
    volume = small_volume("256k")
    store = open_store(f"s3://{job.bucket}")
    with pytest.raises(NoSpace) as raised:
        store.download_dir(f"s3://{job.bucket}/model/", volume / "model")
    where = f"{volume}/model.kubetune-partial: no space left on device for the download of "
    sizes = r"at least \d+\.\d MiB needed, 0\.\d MiB free now; give the scratch volume"
    assert str(raised.value).startswith(f"{where}s3://{job.bucket}/model/: ")
    assert re.search(sizes, str(raised.value)), raised.value
    assert not (volume / "model").exists()


def test_artifacts_that_do_not_fit_leave_no_manifest(job, small_volume):
    config = job.config("out-export-full", **RUN)
    hp = Hyperparameters.model_validate(config.hyperparameters.model_dump())
    model = load_model(job.root / "model", hp, torch.device("cpu"))
    tokenizer = load_tokenizer(job.root / "model")
    volume, store = small_volume("1m"), open_store(config.output.uri)
    Ballast(volume).fill(leave=8 * PAGE)  # the adapter's tensors (28 KiB) fit; not all files
    with pytest.raises(NoSpace) as raised:
        write = lambda folder: MODELS.get("causal-lm", "test").export(model, tokenizer, folder, hp)  # noqa: E731
        export(config, {"epochs": []}, store, volume / "artifacts", model_bytes(model, hp), write)
    assert raised.value.started, "refused before writing; the sizes need a look"
    assert str(raised.value).startswith(
        f"{volume}/artifacts: no space left on device for the artifacts: at least 0.0 MiB needed"
    )
    assert not (volume / "artifacts").exists()
    assert store.list_files(config.output.uri) == []  # no file, no MANIFEST.json
