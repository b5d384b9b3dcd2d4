"""Two ranks on CPU (gloo) under torchrun, as a PyTorchJob pod runs them: DDP and FSDP2 train
the same model as one process with the same global batch."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_trainer.train import train
from tests.support.training import (
    config_for,
    hold_out,
    make_job,
    run_trainer,
    runtime,
    with_data,
)

# lora_dropout 0: dropout masks are the only randomness that differs between the layouts.
SAME = {"epoch": 2, "lora_dropout": 0.0, "merge_weights": False, "checkpoint_interval_steps": 0}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, batch 4: the reference run."""
    root = make_job(tmp_path_factory.mktemp("job"), samples=160)
    metrics = train(config_for(root, per_device_train_batch_size=4, **SAME), runtime(root))
    return root, metrics


# Same steps, same rows per step; the sums differ in order (two ranks' gradients averaged by
# gloo), and how far that drifts over two epochs depends on the CPU's kernels: under 0.1% on the
# machines of earlier runs, 0.11% on an AMD EPYC. A wrong global batch changes the step count
# (asserted) first.
LOSS_TOLERANCE = 5e-3


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
    assert metrics["world_size"] == 2 and metrics["steps"] == reference.steps
    ours = [e["eval_loss"] for e in metrics["epochs"]]
    theirs = [e.eval_loss for e in reference.epochs]
    assert ours == pytest.approx(theirs, rel=LOSS_TOLERANCE), (ours, theirs)
    assert ours[-1] < ours[0]
    assert metrics["train_tokens"] >= reference.train_tokens  # blank padding rows at most
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert "adapter/adapter_model.safetensors" in {f["path"] for f in manifest["files"]}
    assert not (out / "checkpoints").exists()  # removed once the artifacts are complete


def test_two_nodes_through_the_image_entrypoint(single, tmp_path):
    """Two "pods" as a PyTorchJob starts them: the image's entrypoint with the PET_* topology,
    each node with its own scratch folder (its own downloads), LoRA trained across nodes."""
    root, reference = single
    config = config_for(root, output="out-nodes", per_device_train_batch_size=2, **SAME)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json(by_alias=True))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    entrypoint = Path(__file__).parents[2] / "trainer-image" / "entrypoint.sh"
    nodes = []
    for rank in range(2):
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # torchrun
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": "1",
            "PET_NODE_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "KUBETUNE_CONFIG": str(path),
            "KUBETUNE_SCRATCH": str(tmp_path / f"node-{rank}"),
            "TMPDIR": str(tmp_path / f"tmp-{rank}"),
            "HOME": str(tmp_path / f"home-{rank}"),
        }
        nodes.append(
            subprocess.Popen(
                ["bash", str(entrypoint)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "rank 1 of 2 joined (gloo)" in logs[1]
    for rank in range(2):  # each node downloaded the model into its own scratch, and removed
        folder = tmp_path / f"node-{rank}" / "uid-1"  # it once the artifacts were complete
        assert re.search(rf"{re.escape(config.model.source)}: \d+ files downloaded", logs[rank])
        assert f"scratch: removed {folder} (" in logs[rank] and not folder.exists()
    metrics = json.loads((root / "out-nodes" / "metrics.json").read_text())
    assert metrics["steps"] == reference.steps
    ours = [e["eval_loss"] for e in metrics["epochs"]]
    theirs = [e.eval_loss for e in reference.epochs]
    assert ours == pytest.approx(theirs, rel=LOSS_TOLERANCE), (ours, theirs)


@pytest.mark.parametrize("enable_fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_ranks_score_the_test_channel_with_the_best_epochs_weights(tmp_path, enable_fsdp):
    """Rank 0's best weights reach every rank (sharded under FSDP) before the test rows are
    shared out: on the validation records again, the test loss is the best epoch's validation
    loss. Under DDP a constant learning rate of 1.0 makes that epoch an earlier one than the
    last; FSDP's sums on CPU take another path, where the last epoch stays the best."""
    root = make_job(tmp_path, samples=80)
    held = hold_out(root, 16)
    config = config_for(
        root,
        learning_rate=1.0,
        lr_scheduler_type="constant",
        per_device_train_batch_size=2,
        enable_fsdp=enable_fsdp,
        **{**SAME, "epoch": 3},
    )
    result = run_trainer(with_data(config, validation=held, test=held), root, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    losses = [e["eval_loss"] for e in metrics["epochs"]]
    assert enable_fsdp or metrics["best_epoch"] < 3, losses  # the premise, under DDP
    assert metrics["test_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6), losses
    assert metrics["test_samples"] == 16 and metrics["world_size"] == 2
    assert len((root / "out" / "samples.jsonl").read_text().splitlines()) == 5
