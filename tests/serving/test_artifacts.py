"""What to serve from a finished job: the weights it exported, at s3:// URIs a cluster can read,
under a valid name, each refusal one line naming the option or file and the rule."""

import json

import pytest

from kubetune.local.files import LocalError
from kubetune.local.summary import NotFinished
from kubetune.serving.artifacts import Resources, ServingError, plan, read_finished
from tests.support.outputs import finished_at, write_finished

OUT = "s3://artifacts/support-bot/"
GPU = Resources(gpus=1, cpu="4", memory="32Gi")


def problems(job, **options) -> list[str]:
    with pytest.raises(ServingError) as caught:
        plan(job, resources=GPU, **options)
    return caught.value.lines


def test_merged_weights_by_default_when_exported(tmp_path):
    serving = plan(finished_at(tmp_path, OUT), resources=GPU)
    assert (serving.weights, serving.artifacts, serving.base) == ("merged", f"{OUT}merged/", None)
    assert (serving.name, serving.namespace, serving.job) == (
        "support-bot",
        "team-a",
        "team-a/support-bot",
    )
    assert serving.job_uid == "uid-support-bot"


def test_adapter_and_base_model_without_merged_weights(tmp_path):
    job = finished_at(tmp_path, OUT, merged=False, source="s3://models/llama")
    serving = plan(job, resources=GPU)
    assert (serving.weights, serving.artifacts) == ("adapter", f"{OUT}adapter/")
    assert serving.base == "s3://models/llama/"  # a folder, as both runtimes copy it
    assert serving.base_name == "support-bot-base"  # the job's name is the adapter's
    assert problems(job, weights="merged") == [
        f"--weights merged: the job exported no merged/ ({OUT}MANIFEST.json lists none; "
        "train with merge_weights: true)"
    ]


@pytest.mark.parametrize(("lora_r", "rank"), [(1, 8), (8, 8), (12, 16), (64, 64), (400, 512)])
def test_vllm_is_told_the_adapter_rank(tmp_path, lora_r, rank):
    serving = plan(finished_at(tmp_path, OUT, lora_r=lora_r), weights="adapter", resources=GPU)
    assert serving.max_lora_rank == rank


def test_a_rank_vllm_cannot_serve_asks_for_merged_weights(tmp_path):
    job = finished_at(tmp_path, OUT, lora_r=1024)
    assert problems(job, weights="adapter") == [
        f"--weights adapter: lora_r 1024 ({OUT}config.json) is above the largest rank vLLM "
        "serves (512); serve --weights merged"
    ]
    assert plan(job, resources=GPU).weights == "merged"


def test_a_local_base_model_needs_an_s3_copy(tmp_path):
    job = finished_at(tmp_path, OUT, source="file:///home/me/models/llama")
    assert problems(job, weights="adapter") == [
        "--weights adapter: the base model meta-textgeneration-llama-3-2-1b is at "
        f"file:///home/me/models/llama ({OUT}config.json model.source), which a cluster "
        "cannot read; pass --base-uri s3://... where a copy of it is, or serve --weights merged"
    ]
    serving = plan(job, weights="adapter", base_uri="s3://models/llama/", resources=GPU)
    assert serving.base == "s3://models/llama/"
    assert problems(job, base_uri="s3://models/llama/") == [
        "--base-uri s3://models/llama/: only --weights adapter loads a base model"
    ]


def test_a_local_output_folder_must_be_copied_to_s3_first(tmp_path):
    job = finished_at(tmp_path / "out", (tmp_path / "out").as_uri())
    assert problems(job) == [
        f"OUTPUT_URI {tmp_path.as_uri()}/out/: a cluster cannot read this machine's files; "
        f"copy the folder to S3 (aws s3 sync {tmp_path}/out/ s3://BUCKET/PREFIX/) and pass "
        "that s3:// URI"
    ]


@pytest.mark.parametrize("name", ["Support", "1bot", "bot.v2", "b" * 51])
def test_names_are_dns_1035_labels(tmp_path, name):
    [line] = problems(finished_at(tmp_path, OUT), name=name)
    assert line.startswith(f"--name {name!r}: must be a DNS-1035 label")
    assert plan(finished_at(tmp_path, OUT), name="b" * 50, resources=GPU).name == "b" * 50


def test_every_problem_at_once(tmp_path):
    job = finished_at(tmp_path, tmp_path.as_uri(), merged=False, source="file:///m")
    found = problems(job, name="Bad")
    assert [line.split(" ", 1)[0] for line in found] == ["OUTPUT_URI", "--weights", "--name"]


def test_unfinished_jobs_and_unreadable_configs(tmp_path):
    with pytest.raises(NotFinished):
        read_finished((tmp_path / "nothing").as_uri())
    folder = write_finished(tmp_path / "out", "s3://artifacts/x/")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["source"] = "gs://elsewhere"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LocalError) as caught:
        read_finished(folder.as_uri())
    assert caught.value.lines == [
        f"{folder.as_uri()}/config.json: not a TrainerConfig: model.source: must be an "
        "s3://bucket/prefix URI (or file:///path for local mode)"
    ]
