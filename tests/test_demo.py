"""The quick start in brief: the committed sample data equal to what builds it, the held-out
questions kept out of training, the tiny demo model built from code (make demo-tiny) and a
shortened job through `kubetune run`; slow: the same with SmolLM2 (make demo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune import demo, ops_desk
from kubetune.local import smollm2

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"


def test_committed_sample_data_is_what_the_demo_generates():
    expected = demo.sample_files()
    committed = {
        p.relative_to(QUICKSTART): p for p in (QUICKSTART / "data").rglob("*") if p.is_file()
    }
    assert sorted(committed) == sorted(expected)
    for relative, text in expected.items():
        assert committed[relative].read_text() == text, (
            f"{relative} differs from what kubetune.demo generates: "
            "python -m kubetune.demo --dir examples/quickstart --data-only"
        )


def test_quickstart_yaml_names_what_the_demo_builds():
    root = demo.DEFAULT_DIR.as_uri()
    hub = yaml.safe_load((QUICKSTART / "hub.yaml").read_text())
    assert {m["modelId"]: m["source"] for m in hub["spec"]["models"]} == {
        smollm2.MODEL_ID: f"{root}/{demo.SMOLLM2_LINK}/",
        "demo-llama": f"{root}/model/",
    }
    for name, data in [
        ("domain-adaptation.yaml", demo.DOMAIN_FILE),
        ("instruction.yaml", demo.INSTRUCTION_FILE),
        ("ops-desk.yaml", ops_desk.TRAIN_FILE),
    ]:
        spec = yaml.safe_load((QUICKSTART / name).read_text())["spec"]
        assert spec["data"]["train"] == f"{root}/{data.parent.as_posix()}/"
        assert spec["output"]["uri"].startswith(f"{root}/out/")


def test_held_out_questions_are_phrased_as_no_training_record_is():
    asked = {r["instruction"] for r in ops_desk.training_records()}
    held_out = ops_desk.held_out_records()
    assert len(held_out) == len(ops_desk.SERVICES)
    for record in held_out:
        assert record["instruction"] not in asked
        # Same facts: the expected answer is one that training teaches.
        assert record["response"] in {r["response"] for r in ops_desk.training_records()}
    # The trainer reads every .jsonl file of its folder.
    assert not ops_desk.HELD_OUT_FILE.is_relative_to(ops_desk.TRAIN_FILE.parent)


def test_every_ops_desk_answer_has_the_style():
    for record in ops_desk.training_records():
        assert record["response"].startswith(ops_desk.TAG + " ")
        assert record["response"].endswith(" " + ops_desk.SIGN_OFF)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The demo folder as `python -m kubetune.demo --dir` leaves it."""
    folder = tmp_path_factory.mktemp("quickstart")
    assert demo.main(["--dir", str(folder)]) == 0
    return folder


def test_demo_builds_a_hugging_face_model_folder(built):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(built / "model")
    tokenizer = AutoTokenizer.from_pretrained(built / "model")
    assert config.model_type == "llama"
    assert config.vocab_size == len(tokenizer)
    # Trained on the sample data: its words are mostly single tokens.
    assert len(tokenizer("MemoryPressure while checkout was deploying")["input_ids"]) <= 10
    for relative, text in demo.sample_files().items():
        assert (built / relative).read_text() == text


def quickstart_file(name: str, folder: Path, tmp_path: Path, **hyperparameters) -> Path:
    """examples/quickstart/NAME with its /tmp/kubetune-quickstart URIs moved to `folder`."""
    text = (QUICKSTART / name).read_text()
    body = yaml.safe_load(text.replace(demo.DEFAULT_DIR.as_uri(), folder.as_uri()))
    if hyperparameters:
        body["spec"]["hyperparameters"].update(hyperparameters)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_shortened_quickstart_job_trains_and_its_eval_loss_falls(built, tmp_path):
    # 2 epochs of 48 notes blocks (6 steps each) instead of 4 of 166: a few seconds.
    job = quickstart_file(
        "domain-adaptation.yaml", built, tmp_path, epoch=2, max_train_samples=48, max_val_samples=16
    )
    hub = quickstart_file("hub.yaml", built, tmp_path)
    command = [sys.executable, "-m", "kubetune.cli.main", "run", str(job), "--hub", str(hub)]
    command += ["--local", "--scratch", str(tmp_path / "scratch")]
    # One torch thread, as make demo: on a shared CI machine two threads ran 3-6 times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    out = built / "out" / "incident-notes"
    assert out.as_uri() in done.stdout
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert {"adapter/adapter_model.safetensors", "metrics.json", "loss_curve.png"} <= {
        f["path"] for f in manifest["files"]
    }
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[-1]["eval_loss"] < epochs[0]["eval_loss"]


@pytest.mark.slow
def test_a_shortened_smollm2_job_trains_and_its_eval_loss_falls(tmp_path):
    """make demo, shortened: the real model (built once, cached) and 2 epochs of 2 steps."""
    folder = tmp_path / "quickstart"
    assert demo.main(["--dir", str(folder), "--model", "smollm2"]) == 0
    assert (folder / demo.SMOLLM2_LINK / "config.json").is_file()
    job = quickstart_file(
        "ops-desk.yaml", folder, tmp_path, epoch=2, max_train_samples=6, max_val_samples=4
    )
    hub = quickstart_file("hub.yaml", folder, tmp_path)
    command = [sys.executable, "-m", "kubetune.cli.main", "run", str(job), "--hub", str(hub)]
    command += ["--local", "--scratch", str(tmp_path / "scratch")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    out = folder / "out" / "ops-desk"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][-1]["eval_loss"] < metrics["epochs"][0]["eval_loss"]
    files = {f["path"] for f in json.loads((out / "MANIFEST.json").read_text())["files"]}
    assert {"adapter/adapter_model.safetensors", "merged/model.safetensors"} <= files
