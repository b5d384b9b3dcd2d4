"""The recipe with parts other than the defaults, end to end on CPU through the real trainer:
chat data, a seq2seq (Flan-T5-shaped) model alone and under DDP on gloo, early stopping, and
parts that are unknown or badly configured failing in one line before any download."""

import json
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM

from kubetune.api.v1alpha1 import TrainingMetrics
from kubetune.api.v1alpha1.exits import ExitCode
from kubetune_trainer.train import train
from tests.support.training import (
    config_for,
    make_chat_job,
    make_job,
    make_t5_job,
    run_trainer,
    runtime,
    trainer_env,
    with_parts,
)


def falling(metrics) -> list[float]:
    if isinstance(metrics, dict):
        metrics = TrainingMetrics.model_validate(metrics)
    losses = [e.eval_loss for e in metrics.epochs]
    assert losses[-1] < losses[0] * 0.9, losses
    return losses


def test_chat_data_trains_on_the_assistant_turns(tmp_path):
    job = make_chat_job(tmp_path)
    config = config_for(job, instruction_tuned=False, max_input_length=96)
    config = with_parts(config, dataFormat={"name": "chat"})
    metrics = train(config, runtime(job))
    falling(metrics)
    saved = json.loads((job / "out" / "config.json").read_text())
    assert saved["trainer"]["dataFormat"]["name"] == "chat"


def test_a_seq2seq_model_trains_and_exports_an_adapter_and_merged_weights(tmp_path):
    job = make_t5_job(tmp_path)
    metrics = train(config_for(job, learning_rate=3e-3), runtime(job))
    falling(metrics)
    out = job / "out"
    merged = AutoModelForSeq2SeqLM.from_pretrained(out / "merged")
    base = AutoModelForSeq2SeqLM.from_pretrained(job / "model")
    tuned = PeftModel.from_pretrained(base, out / "adapter")
    ids = torch.tensor([[5, 6, 7, 1]])
    start = torch.tensor([[0]])
    with torch.no_grad():
        a = merged(input_ids=ids, decoder_input_ids=start).logits
        b = tuned(input_ids=ids, decoder_input_ids=start).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_a_seq2seq_model_learns_domain_text(tmp_path):
    job = make_t5_job(tmp_path)
    text = " ".join(json.loads(line)["response"] for line in open(job / "data" / "train.jsonl"))
    domain = job / "domain"
    domain.mkdir()
    (domain / "notes.txt").write_text(text)
    config = config_for(job, instruction_tuned=False, learning_rate=3e-3, merge_weights=False)
    config = config.model_copy(update={"data": config.data.model_copy(
        update={"train": f"file://{domain}"})})  # fmt: skip
    falling(train(config, runtime(job)))


def test_a_seq2seq_model_trains_under_ddp_on_two_ranks(tmp_path):
    job = make_t5_job(tmp_path)
    config = config_for(job, learning_rate=3e-3, merge_weights=False)
    result = run_trainer(config, job, nproc=2, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    falling(metrics)


def test_early_stopping_ends_training_and_exports_the_best_epoch(tmp_path):
    job = make_job(tmp_path, samples=80)
    # A learning rate too small to move the loss: no epoch improves by the threshold.
    config = config_for(
        job, epoch=6, learning_rate=1e-9, early_stopping_patience=2, early_stopping_threshold=0.01
    )
    metrics = train(config, runtime(job))
    assert len(metrics.epochs) == 3, metrics.epochs
    assert metrics.best_epoch == 1 or metrics.epochs[0].eval_loss >= metrics.eval_loss
    assert metrics.stopped_early.startswith("early stopping: eval loss")
    assert "for 2 epoch(s)" in metrics.stopped_early
    assert (job / "out" / "MANIFEST.json").exists()


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        (
            {"callbacks": [{"name": "early-stopping"}, {"name": "no-such-callback"}]},
            "spec.trainer.callbacks[1].name: unknown callback 'no-such-callback' (known: ",
        ),
        (
            {"callbacks": [{"name": "early-stopping", "options": {"patience": 0}}]},
            "spec.trainer.callbacks[0].options.patience: Input should be greater than or equal "
            "to 1 (got 0)",
        ),
        (
            {"callbacks": [{"name": "early-stopping", "options": {"patiense": 2}}]},
            "spec.trainer.callbacks[0].options.patiense: Extra inputs are not permitted",
        ),
        (
            {"dataFormat": {"name": "domain-adaptation"}},
            "spec.trainer.dataFormat.name: domain-adaptation contradicts "
            "hyperparameters.instruction_tuned: true",
        ),
        ({"model": {"name": "vision"}}, "spec.trainer.model.name: unknown model family 'vision'"),
        (
            {"strategy": {"name": "fsdp2", "options": {"shard": True}}},
            "spec.trainer.strategy.options.shard: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_parts_fail_in_one_line_before_anything_is_downloaded(tmp_path, trainer, expected):
    config = config_for(tmp_path)  # no model or data there: a download would fail differently
    path = tmp_path / "config.json"
    path.write_text(with_parts(config, **trainer).model_dump_json(by_alias=True))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.train", "--config", str(path)],
        capture_output=True,
        text=True,
        env=trainer_env(tmp_path),
        timeout=120,
    )
    assert result.returncode == ExitCode.USER_ERROR, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").rglob("*.json"))
