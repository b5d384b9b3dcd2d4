"""Two ranks on CPU (gloo) under torchrun, as a PyTorchJob pod runs them: DDP and FSDP2 train
the same model as one process with the same global batch."""

import json

import pytest

from kubetune_trainer.train import train
from tests.support.training import config_for, make_job, run_trainer, runtime

# lora_dropout 0: dropout masks are the only randomness that differs between the layouts.
SAME = {"epoch": 2, "lora_dropout": 0.0, "merge_weights": False, "checkpoint_interval_steps": 0}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, batch 4: the reference run."""
    root = make_job(tmp_path_factory.mktemp("job"), samples=160)
    metrics = train(config_for(root, per_device_train_batch_size=4, **SAME), runtime(root))
    return root, metrics


@pytest.mark.parametrize("enable_fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_ranks_train_like_one_process_with_the_same_global_batch(single, enable_fsdp):
    root, reference = single
    # 2 ranks x batch 2 = the single process's batch 4, row for row (see batches.rank_share).
    config = config_for(
        root,
        output=f"out-{'fsdp' if enable_fsdp else 'ddp'}",
        per_device_train_batch_size=2,
        enable_fsdp=enable_fsdp,
        **SAME,
    )
    result = run_trainer(config, root, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1]" in result.stderr and "rank 1 of 2 joined (gloo)" in result.stderr
    if enable_fsdp:
        assert "FSDP: 2 LlamaDecoderLayer layers sharded over 2 ranks" in result.stderr

    out = root / config.output.uri.rsplit("/", 1)[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == reference["steps"]
    ours = [e["eval_loss"] for e in metrics["epochs"]]
    theirs = [e["eval_loss"] for e in reference["epochs"]]
    assert ours == pytest.approx(theirs, rel=1e-3), (ours, theirs)
    assert ours[-1] < ours[0]
    assert metrics["train_tokens"] >= reference["train_tokens"]  # blank padding rows at most
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert "adapter/adapter_model.safetensors" in {f["path"] for f in manifest["files"]}
    assert not (out / "checkpoints").exists()  # removed once the artifacts are complete
