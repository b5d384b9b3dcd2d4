"""The training recipe end to end on CPU: tiny Llama, real files, loss goes down, artifacts."""

import json
import random
import subprocess
import sys

import pytest

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.train import train
from tests.support.tiny_models import build_tiny_llama, build_tokenizer

WORDS = "the cat dog sat ran on a mat log red blue big small quickly slowly".split()


def sentences(n, seed=0):
    rng = random.Random(seed)
    # A learnable pattern: "the <adj> <noun> <verb> on a <noun>".
    return [
        f"the {rng.choice(['red', 'blue', 'big', 'small'])} {rng.choice(['cat', 'dog'])} "
        f"{rng.choice(['sat', 'ran'])} on a {rng.choice(['mat', 'log'])}"
        for _ in range(n)
    ]


@pytest.fixture
def job(tmp_path):
    texts = sentences(400)
    model_dir = tmp_path / "model"
    tokenizer = build_tokenizer(texts + WORDS, model_dir)
    # A wide init lets the frozen random head express confident logits, as a pretrained one can.
    build_tiny_llama(model_dir, len(tokenizer), tokenizer=tokenizer, initializer_range=0.5)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(
        "".join(
            json.dumps({"instruction": "describe an animal", "context": "", "response": t}) + "\n"
            for t in texts
        )
    )
    (data / "template.json").write_text(
        json.dumps({"prompt": "{instruction}:", "completion": " {response}"})
    )
    return tmp_path


def config_for(root, **hyperparameters):
    hp = Hyperparameters(
        instruction_tuned=True,
        epoch=3,
        learning_rate=2e-3,
        lora_r=8,
        per_device_train_batch_size=4,
        max_input_length=32,
        **hyperparameters,
    )
    return TrainerConfig.model_validate(
        {
            "job": {"name": "tiny", "namespace": "test", "uid": "uid-1"},
            "model": {"modelId": "tiny-llama", "source": f"file://{root}/model"},
            "data": {"train": f"file://{root}/data"},
            "hyperparameters": hp.model_dump(),
            "output": {"uri": f"file://{root}/out"},
        }
    )


def runtime(root):
    return Runtime.from_env({"KUBETUNE_SCRATCH": str(root / "scratch")})


def test_instruction_tuning_learns_and_exports_complete_artifacts(job):
    metrics = train(config_for(job), runtime(job))
    losses = [e["eval_loss"] for e in metrics["epochs"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] * 0.9, losses
    out = job / "out"
    manifest = json.loads((out / "MANIFEST.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "merged/model.safetensors",
        "metrics.json",
        "config.json",
    } <= listed
    assert all((out / f["path"]).stat().st_size == f["size"] for f in manifest["files"])
    assert manifest["job"]["uid"] == "uid-1"
    progress = json.loads((out / "progress.json").read_text())
    assert progress["done"] and progress["step"] == progress["total_steps"] > 0
    assert progress["tokens_per_second"] > 0


def test_rerun_of_a_finished_job_does_nothing_and_another_job_is_refused(job):
    config = config_for(job, merge_weights=False)
    train(config, runtime(job))
    before = (job / "out" / "MANIFEST.json").stat().st_mtime_ns
    train(config, runtime(job))
    assert (job / "out" / "MANIFEST.json").stat().st_mtime_ns == before
    other = config.model_copy(update={"job": config.job.model_copy(update={"uid": "uid-2"})})
    path = job / "other.json"
    path.write_text(other.model_dump_json(by_alias=True))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.train", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"KUBETUNE_SCRATCH": str(job / "s2"), "PATH": ""},
    )
    assert result.returncode == 2
    assert "holds the output of job test/tiny (uid uid-1); choose another output URI" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
