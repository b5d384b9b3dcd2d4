"""Artifacts that outlive the job, on a tiny Llama: the adapter loads with only the hub's model
folder (the scratch folder is gone by then), merged/ comes in the base model's dtype or the
one asked, the tokenizer and generation config lie beside both, the files are readable by
others, and the scratch folder is removed once the job is complete, kept while it may resume."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.api.v1alpha1 import ArtifactManifest
from kubetune_trainer.train import train
from tests.support.artifacts import logits_three_ways, merge_tolerance, modes
from tests.support.training import (
    config_for,
    made_a_step,
    make_job,
    runtime,
    trainer_command,
    trainer_env,
)

BESIDE = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}
QUICK = {"epoch": 2, "max_input_length": 24}


@pytest.fixture(scope="module", autouse=True)
def usual_umask():
    """What most shells set; the modes below are what `cp` gives under it."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    job = make_job(tmp_path_factory.mktemp("portable"), samples=120)
    train(config_for(job, **QUICK), runtime(job))
    return job


def manifest(out) -> ArtifactManifest:
    return ArtifactManifest.read((out / "MANIFEST.json").read_text(), str(out))


def test_the_adapter_loads_on_the_hub_model_folder_alone_and_equals_merged(finished):
    job, out = finished, finished / "out"
    assert not (job / "scratch" / "uid-1").exists()  # nothing of the run's copies is left
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny-llama"  # the hub's modelId
    for path in out.rglob("*"):  # no artifact names the scratch copy
        if path.suffix in (".json", ".md"):
            assert str(job / "scratch") not in path.read_text(), path

    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    inputs = dict(tokenizer(["describe an animal: the red cat sat"], return_tensors="pt"))
    logits = logits_three_ways(out, job / "model", AutoModelForCausalLM, inputs)
    assert not torch.allclose(logits["adapter"], logits["base"], atol=1e-2)  # it was applied
    torch.testing.assert_close(logits["adapter"], logits["merged"], **merge_tolerance())


def test_tokenizer_and_generation_config_lie_beside_both(finished):
    out = finished / "out"
    for folder in ("adapter", "merged"):
        assert BESIDE <= {p.name for p in (out / folder).iterdir()}, folder
    generation = json.loads((out / "adapter" / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (2, 3)  # the base's


def test_the_manifest_records_the_model_the_dtype_and_the_sizes(finished):
    out = finished / "out"
    read = manifest(out)
    assert read.model.model_id == "tiny-llama"
    assert read.model.source == f"file://{finished}/model"
    assert read.merged_dtype == "float32"  # the tiny model's own
    on_disk = {
        top: sum(p.stat().st_size for p in (out / top).rglob("*") if p.is_file())
        for top in ("adapter", "merged")
    }
    assert {k: read.sizes[k] for k in on_disk} == on_disk
    assert read.total_size == sum(f.size for f in read.files) == sum(read.sizes.values())
    written = json.loads((out / "MANIFEST.json").read_text())  # in the file, for any reader
    assert written["sizes"] == read.sizes and written["total_size"] == read.total_size
    assert written["model"] == {"model_id": "tiny-llama", "source": f"file://{finished}/model"}


def test_every_output_file_is_readable_by_others(finished):
    found = modes(finished / "out")
    folders = {path for path in found if (finished / "out" / path).is_dir()}
    assert {found[p] for p in folders} == {"0o755"}, found
    assert {mode for path, mode in found.items() if path not in folders} == {"0o644"}, found


def test_merged_keeps_the_base_models_dtype_unless_asked_otherwise(tmp_path):
    job = make_job(tmp_path, samples=60)
    bf16 = AutoModelForCausalLM.from_pretrained(job / "model", dtype=torch.bfloat16)
    bf16.save_pretrained(job / "model")  # the hub's model, in bfloat16 as most are
    hp, outs = {**QUICK, "epoch": 1}, ("auto", "fp32")
    train(config_for(job, output="auto", **hp), runtime(job))
    train(config_for(job, output="fp32", uid="uid-2", merged_dtype="float32", **hp), runtime(job))

    weights = {out: load_file(job / out / "merged" / "model.safetensors") for out in outs}
    assert {t.dtype for t in weights["auto"].values()} == {torch.bfloat16}
    assert {t.dtype for t in weights["fp32"].values()} == {torch.float32}
    assert manifest(job / "auto").merged_dtype == "bfloat16"
    assert manifest(job / "fp32").merged_dtype == "float32"
    loaded = AutoModelForCausalLM.from_pretrained(job / "auto" / "merged")
    assert loaded.dtype == torch.bfloat16  # its config.json says so
    sizes = [manifest(job / out).sizes["merged"] for out in outs]
    assert 1.9 < sizes[1] / sizes[0] < 2.1, sizes
    adapter_sizes = {manifest(job / out).sizes["adapter"] for out in outs}
    assert len(adapter_sizes) == 1  # the adapter is the same whatever merged/'s dtype


def test_scratch_is_kept_while_the_job_may_resume_and_removed_once_complete(tmp_path):
    job = make_job(tmp_path)
    config = config_for(job, merge_weights=False, checkpoint_interval_steps=0)
    folder, out = job / "scratch" / "uid-1", job / "out"
    process = subprocess.Popen(
        trainer_command(config, job),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=trainer_env(job),
    )
    deadline = time.monotonic() + 120
    while not made_a_step(out):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    log, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert (folder / "model" / "model.safetensors").is_file()  # what the rerun resumes with
    assert (folder / "data" / "train" / "train.jsonl").is_file()

    result = subprocess.run(
        trainer_command(config, job), capture_output=True, text=True, env=trainer_env(job)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already downloaded" in result.stderr  # the kept copies were used
    assert not folder.exists() and (out / "MANIFEST.json").exists()
    assert "scratch: removed" in result.stderr

    (folder / "model").mkdir(parents=True)  # as a run killed after MANIFEST.json leaves it
    (folder / "model" / "model.safetensors").write_bytes(b"0" * 1000)
    train(config, runtime(job))  # finds the job complete
    assert not folder.exists()
