"""`kubetune report OUTPUT_URI`: a finished job's metrics table from its artifacts, on a local
folder and on S3 alike, and a clear answer when the job has not finished there."""

import json
import shutil
from pathlib import Path

import pytest

from kubetune.storage import open_store
from kubetune_trainer.train import train
from tests.support.cli import kubetune
from tests.support.s3 import make_bucket, s3_endpoint_fixture, s3_server_fixture  # noqa: F401
from tests.support.training import config_for, hold_out, make_job, runtime, with_data


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The output folder of a real (tiny, two-epoch) training run."""
    root = make_job(tmp_path_factory.mktemp("report"), samples=60)
    train(config_for(root, epoch=2), runtime(root))
    return root / "out"


def test_the_table_of_a_finished_job(finished):
    result = kubetune("report", f"file://{finished}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((finished / "metrics.json").read_text())
    manifest = json.loads((finished / "MANIFEST.json").read_text())
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "FineTuneJob test/tiny (uid uid-1)",
        f"output: file://{finished}",
        f"model: tiny-llama (file://{finished.parent}/model)",
        "",
        "  epoch   train loss   eval loss   perplexity",
    ]
    for e in metrics["epochs"]:
        mark = "*" if e["epoch"] == metrics["best_epoch"] else " "
        row = f"{mark} {e['epoch']:>5}   {e['train_loss']:>10.4f}   {e['eval_loss']:>9.4f}"
        assert any(line.startswith(row) for line in lines), row
    assert f"steps {metrics['steps']} on 1 process(es); " in result.stdout
    assert f"{metrics['tokens_per_second']:,.0f} tokens/s; padding " in result.stdout
    sizes = manifest["sizes"]  # the folders' sizes, merged/'s dtype
    adapter, merged = (f"{sizes[name] / 1e3:.1f} kB" for name in ("adapter", "merged"))
    assert 1e4 < sizes["adapter"] < 1e6 and 1e5 < sizes["merged"] < 1e6  # both in kB
    assert f"artifacts (MANIFEST.json): adapter/ {adapter}, merged/ {merged} (float32)" in lines
    for f in manifest["files"]:  # every artifact, with its size
        assert any(line.split()[:1] == [f["path"]] for line in lines), f["path"]
    assert lines[-1].startswith(f"  {len(manifest['files'])} files, ")
    assert kubetune("report", finished).stdout == result.stdout  # a plain folder works too


@pytest.fixture(scope="module")
def tested(tmp_path_factory) -> Path:
    """The output folder of a one-epoch run with a test channel."""
    root = make_job(tmp_path_factory.mktemp("tested"), samples=60)
    held = hold_out(root, 8)
    config = with_data(config_for(root, epoch=1, merge_weights=False), test=held)
    train(config, runtime(root))
    return root / "out"


def test_the_test_figures_and_sample_answers(tested, finished):
    result = kubetune("report", tested)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tested / "metrics.json").read_text())
    samples = [json.loads(line) for line in (tested / "samples.jsonl").read_text().splitlines()]
    lines = result.stdout.splitlines()
    figures = f"test loss {metrics['test_loss']:.4f}   perplexity {metrics['test_perplexity']:.2f}"
    assert f"{figures}   (8 test samples, the best epoch's weights)" in lines
    start = lines.index("sample answers (samples.jsonl, greedy):")
    shown = lines[start + 1 : start + 1 + 3 * len(samples)]
    assert len(samples) == 5 and len(shown) == 15
    for i, sample in enumerate(samples):
        prompt, reference, answer = shown[3 * i : 3 * i + 3]
        assert prompt == f"  [{sample['index']}] prompt:    describe an animal:"
        assert reference == f"      reference: {' '.join(sample['reference'].split())}"
        assert answer.startswith("      answer:    ") and len(answer) <= 17 + 100
    assert "test loss" not in kubetune("report", finished).stdout  # no test channel there
    assert "sample answers" not in kubetune("report", finished).stdout


def test_the_same_table_from_s3(finished, s3_endpoint):
    bucket = make_bucket()
    open_store("s3://x").upload_dir(finished, f"s3://{bucket}/jobs/tiny/")
    result = kubetune("report", f"s3://{bucket}/jobs/tiny/")
    assert result.returncode == 0, result.stderr
    local = kubetune("report", finished).stdout
    assert result.stdout == local.replace(f"file://{finished}", f"s3://{bucket}/jobs/tiny/")


def test_an_unfinished_job_says_how_far_it_got(finished, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(finished, running)
    (running / "MANIFEST.json").unlink()
    (running / "progress.json").write_text(json.dumps({"epoch": 2, "step": 7, "total_steps": 30}))
    result = kubetune("report", running)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"kubetune: error: not finished: no MANIFEST.json at file://{running}/MANIFEST.json; "
        "progress: step 7 of 30 (epoch 2)\n"
    )
    empty = kubetune("report", tmp_path / "nothing")
    assert empty.returncode == 1
    assert "no progress.json: no job has trained there (yet)" in empty.stderr


def test_storage_problems_are_one_line(s3_endpoint):
    result = kubetune("report", "s3://no-such-bucket-here/out/")
    assert result.returncode == 2
    assert result.stderr == (
        "kubetune: error: s3://no-such-bucket-here/out/MANIFEST.json: no such bucket\n"
    )
    assert kubetune("report", "gs://bucket/out").stderr.startswith(
        "kubetune: error: OUTPUT_URI 'gs://bucket/out': must be an s3://bucket/prefix URI"
    )
