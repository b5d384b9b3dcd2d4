"""The real trainer on a tiny job whose model, data and output all live in S3, run as a pod runs
it (`python -m kubetune_trainer.train`), with its log read line by line while it runs, and the
checks every fault test makes on what it left in the bucket."""

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from kubetune.api.v1alpha1 import TrainerConfig
from kubetune.storage import open_store
from kubetune_trainer import checkpoint
from kubetune_trainer.artifacts import MANIFEST
from tests.support.training import config_for, make_job, trainer_command, trainer_env

# No dropout: a resumed run must replay the same numbers as an uninterrupted one. 240 samples:
# 192 to train (the rest validate) / 4 a batch = 48 steps an epoch, a checkpoint every 5 steps.
SAMPLES = 240
RUN = {"lora_dropout": 0.0, "merge_weights": False, "checkpoint_interval_steps": 5}
STEP = re.compile(r"step (\d+)/(\d+) \(epoch")
RESUMED = re.compile(r"resuming from \S+: epoch (\d+), step (\d+) done")


@dataclass
class S3Job:
    """A tiny model and data under s3://bucket/model/ and s3://bucket/data/."""

    root: Path  # local: the job's files as built, configs, scratch folders
    bucket: str
    endpoint: str  # the S3 server itself (not a proxy in front of it)

    def config(self, output: str, **hyperparameters) -> TrainerConfig:
        config = config_for(self.root, output=output, uid=f"uid-{output}", **hyperparameters)
        doc = config.model_dump(by_alias=True)
        doc["model"]["source"] = f"s3://{self.bucket}/model/"
        doc["data"]["train"] = f"s3://{self.bucket}/data/"
        doc["output"]["uri"] = self.output_uri(output)
        return TrainerConfig.model_validate(doc)

    def output_uri(self, output: str) -> str:
        return f"s3://{self.bucket}/{output}"

    def start(self, config: TrainerConfig, scratch: Path | None = None, endpoint: str = ""):
        """The trainer as a pod runs it: one thread, the AWS_* of the test, its own scratch."""
        env = {
            **trainer_env(self.root),
            "OMP_NUM_THREADS": "1",  # 2 shared cores: more threads only wait for each other
            "KUBETUNE_LOG_LEVEL": "DEBUG",  # a line per step: where each kill landed
            "KUBETUNE_SCRATCH": str(scratch or self.root / f"scratch-{config.job.uid}"),
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
        }
        return Trainer(trainer_command(config, self.root), env)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint)


def make_s3_job(root: Path, bucket: str, endpoint: str, samples: int = SAMPLES) -> S3Job:
    make_job(root, samples)
    client = boto3.client("s3", endpoint_url=endpoint)
    for folder in ("model", "data"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                key = f"{folder}/{path.relative_to(root / folder).as_posix()}"
                client.upload_file(str(path), bucket, key)
    return S3Job(root, bucket, endpoint)


@dataclass
class Trainer:
    """One trainer process; its output is read as it comes, so a test can act on a log line."""

    command: list[str]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    step: int = 0  # the last optimizer step done, from the per-step DEBUG line
    resumed: int | None = None  # the step it resumed from; None: started clean (or not yet)

    def __post_init__(self):
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if step := STEP.search(line):
                self.step = int(step[1])
            elif resumed := RESUMED.search(line):
                self.resumed = self.step = int(resumed[2])

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def seen(self, pattern: str | re.Pattern) -> re.Match | None:
        return next((m for line in list(self.lines) if (m := re.search(pattern, line))), None)

    def wait_until(self, condition, timeout: float = 180) -> bool:
        """True once condition() holds; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                self._reader.join()
                return condition()
            assert time.monotonic() < deadline, f"timed out; log:\n{self.log[-3000:]}"
            time.sleep(0.005)
        return True

    def kill(self) -> None:
        """kill -9: no handler, no cleanup, as the OOM killer or a lost node does it."""
        self.process.kill()
        self.finish()

    def finish(self, timeout: float = 240) -> int:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running after {timeout} s:\n{self.log[-3000:]}") from None
        self._reader.join()
        return self.process.returncode


def artifacts(client, bucket: str, prefix: str) -> tuple[bool, list[str]]:
    """(is MANIFEST.json there, what is wrong): every file it lists must be stored under prefix/
    with its listed size. Listed first, so a manifest seen was written before the listing."""
    prefix = prefix.rstrip("/") + "/"
    sizes = {
        obj["Key"][len(prefix) :]: obj["Size"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    }
    if MANIFEST not in sizes:
        return False, []
    manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read())
    return True, [
        f"{prefix}{f['path']}: listed with {f['size']} bytes, stored: {sizes.get(f['path'])}"
        for f in manifest["files"]
        if sizes.get(f["path"]) != f["size"]
    ]


def checkpoint_steps(job: S3Job, output: str) -> tuple[list[int], list[int], list[int]]:
    """Steps of the checkpoints under the output: complete ones, ones with a CHECKPOINT.json,
    and torn ones (files there, some missing; a save or a prune cut short)."""
    store, uri = open_store("s3://", {"endpoint_url": job.endpoint}), job.output_uri(output)
    complete = [manifest["step"] for _, manifest in checkpoint.complete(store, uri)]
    folders: dict[int, list[str]] = {}
    for key, _ in store.list_files(f"{uri}/{checkpoint.FOLDER}"):
        folder, _, name = key.partition("/")
        folders.setdefault(int(folder.removeprefix("step-")), []).append(name)
    marked = [step for step, names in folders.items() if checkpoint.MANIFEST in names]
    torn = [step for step in folders if step not in complete]
    return sorted(complete), sorted(marked), sorted(torn)


class ManifestWatch:
    """Polls the output prefix while a run goes on (straight at the S3 server, never through a
    proxy): the moment MANIFEST.json shows up, every file it lists must already be there."""

    def __init__(self, job: S3Job, output: str, interval: float = 0.2):
        self.client, self.bucket, self.prefix = job.client(), job.bucket, output
        self.interval, self.polls, self.problems, self.seen = interval, 0, [], False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "ManifestWatch":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self.seen and not self._stop.wait(self.interval):
            self.polls += 1
            try:
                self.seen, problems = artifacts(self.client, self.bucket, self.prefix)
                self.problems += problems
            except Exception as exc:  # noqa: BLE001 - a watcher must not die silently
                self.problems.append(f"watch failed: {exc!r}")
