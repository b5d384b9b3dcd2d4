"""`kubetune run --local` on a Flan-T5-shaped model built offline: the same YAML a cluster
takes, the seq2seq family chosen from the model's config.json, loss falling."""

import json
import subprocess
import sys

import yaml

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
                "merge_weights": False,
            },
            "output": {"uri": f"file://{job}/out"},
        },
    }
    (job / "hub.yaml").write_text(yaml.safe_dump(hub))
    (job / "job.yaml").write_text(yaml.safe_dump(finetunejob))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune.cli.main", "run", str(job / "job.yaml"),
         "--hub", str(job / "hub.yaml"), "--local", "--scratch", str(job / "scratch")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "out" / "metrics.json").read_text())
    losses = [e["eval_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0] * 0.9, losses
    adapter = json.loads((job / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM"
