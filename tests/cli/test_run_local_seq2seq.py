"""`kubetune run --local` on a Flan-T5-shaped model built offline: the same YAML a cluster
takes, the seq2seq family chosen from the model's config.json, loss falling, and artifacts
that need nothing of the run: the adapter loads on the hub's model folder alone."""

import json
import os
import subprocess
import sys

import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.support.artifacts import logits_three_ways, merge_tolerance, modes
from tests.support.training import make_t5_job


def test_a_seq2seq_model_fine_tunes_through_kubetune_run_local(tmp_path):
    job = make_t5_job(tmp_path)
    hub = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "local", "namespace": "team-a"},
        "spec": {"models": [{"modelId": "tiny-flan-t5", "source": f"file://{job}/model"}]},
    }
    finetunejob = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tiny-t5", "namespace": "team-a"},
        "spec": {
            "model": {"hubRef": {"name": "local"}, "modelId": "tiny-flan-t5"},
            "data": {"train": f"file://{job}/data"},
            "hyperparameters": {
                "instruction_tuned": True,
                "epoch": 3,
                "learning_rate": 0.003,
                "max_input_length": 32,
            },
            "output": {"uri": f"file://{job}/out"},
        },
    }
    (job / "hub.yaml").write_text(yaml.safe_dump(hub))
    (job / "job.yaml").write_text(yaml.safe_dump(finetunejob))
    umask = os.umask(0o022)  # the usual one, which the trainer inherits
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kubetune.cli.main", "run", str(job / "job.yaml"),
             "--hub", str(job / "hub.yaml"), "--local", "--scratch", str(job / "scratch")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        os.umask(umask)
    assert result.returncode == 0, result.stderr[-3000:]
    out = job / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [e["eval_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0] * 0.9, losses
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM"
    assert adapter["base_model_name_or_path"] == "tiny-flan-t5"

    # The run's copies are gone: what follows uses the hub's folder and the artifacts only.
    workdir = job / "scratch" / "team-a" / "tiny-t5"
    assert {p.name for p in workdir.iterdir()} <= {"config.json", "trainer.log", "exits"}
    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    inputs = dict(tokenizer(["describe an animal:"], return_tensors="pt"))
    inputs["decoder_input_ids"] = tokenizer([" the red cat"], return_tensors="pt").input_ids
    logits = logits_three_ways(out, job / "model", AutoModelForSeq2SeqLM, inputs)
    assert not torch.allclose(logits["adapter"], logits["base"], atol=1e-2)
    torch.testing.assert_close(logits["adapter"], logits["merged"], **merge_tolerance())
    for folder in ("adapter", "merged"):
        names = {p.name for p in (out / folder).iterdir()}
        assert {"tokenizer.json", "generation_config.json"} <= names, folder
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["model"] == {"model_id": "tiny-flan-t5", "source": f"file://{job}/model"}
    assert manifest["merged_dtype"] == "float32"
    assert set(modes(out).values()) == {"0o644", "0o755"}
    assert "merged/ " in result.stdout and "(float32)" in result.stdout  # the summary's sizes
