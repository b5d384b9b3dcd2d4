"""GPU-only paths: bf16 compute, int8 (bitsandbytes) and FSDP over NCCL. Skipped without CUDA;
run them where a GPU is lent (`pytest -m gpu`)."""

import importlib.util
import json

import pytest
import torch

from kubetune_trainer.model import compute_dtype
from kubetune_trainer.train import train
from tests.support.training import config_for, make_job, run_trainer, runtime

pytestmark = pytest.mark.gpu

QUICK = {"epoch": 2, "merge_weights": True}


@pytest.fixture
def job(tmp_path):
    return make_job(tmp_path, samples=200)


def test_bf16_training_on_one_gpu_learns_and_exports(job):
    assert compute_dtype(torch.device("cuda", 0)) == torch.bfloat16
    metrics = train(config_for(job, **QUICK), runtime(job))
    losses = [e.eval_loss for e in metrics.epochs]
    assert losses[-1] < losses[0]
    assert (job / "out" / "merged" / "model.safetensors").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed"
)
def test_int8_training_on_one_gpu(job):
    metrics = train(config_for(job, int8_quantization=True, **QUICK), runtime(job))
    assert metrics.epochs[-1].eval_loss < metrics.epochs[0].eval_loss


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_fsdp_over_two_gpus(job):
    config = config_for(job, output="out-fsdp", enable_fsdp=True, **QUICK)
    result = run_trainer(config, job, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(nccl)" in result.stderr
    metrics = json.loads((job / "out-fsdp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
