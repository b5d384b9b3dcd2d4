"""train() end to end per JumpStart data format, with model, data and output in S3 (moto).

Each run trains the tiny Llama on a learnable pattern, then checks that eval loss fell and
that MANIFEST.json lists artifacts that really are in the output bucket, at their sizes.
"""

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import torch
from transformers import AutoTokenizer

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig, TrainingMetrics
from kubetune_trainer.formats.samples import DataError
from kubetune_trainer.formats.templates import DEFAULT_PROMPT
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.train import train
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)
from tests.support.tiny_models import build_tiny_llama, build_tokenizer

BLOCK = 32  # max_input_length of the domain-adaptation runs
BATCH = 4
EPOCHS = 3


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # A learnable pattern: "the <adj> <noun> <verb> on a <noun>".
    return [
        f"the {rng.choice(['red', 'blue', 'big', 'small'])} {rng.choice(['cat', 'dog'])} "
        f"{rng.choice(['sat', 'ran'])} on a {rng.choice(['mat', 'log'])}"
        for _ in range(n)
    ]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A hidden-64 model gains nothing from intra-op threads, and on a small machine shared with
    other work they spin-wait for each other: one thread made these runs 2-3x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model folder, built once; its tokenizer also knows the default prompt's words."""
    path = tmp_path_factory.mktemp("model")
    tokenizer = build_tokenizer(sentences(200) + [DEFAULT_PROMPT] * 20, path, vocab_size=600)
    # A wide init lets the frozen random head express confident logits, as a pretrained one can.
    build_tiny_llama(path, len(tokenizer), tokenizer=tokenizer, initializer_range=0.5)
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)  # as the trainer loads it


@dataclass(frozen=True)
class Buckets:
    """Fresh model, data and output buckets on the moto server; the model is uploaded."""

    model: str
    data: str
    output: str

    def put(self, uri: str, files: dict[str, str | bytes]) -> str:
        """Upload files under the folder uri (s3://bucket/prefix/); returns uri."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for name, content in files.items():
            body = content.encode() if isinstance(content, str) else content
            boto3.client("s3").put_object(Bucket=bucket, Key=prefix + name, Body=body)
        return uri


@pytest.fixture
def buckets(s3_endpoint, model_dir) -> Buckets:
    b = Buckets(model=make_bucket(), data=make_bucket(), output=make_bucket())
    client = boto3.client("s3")
    for path in sorted(model_dir.iterdir()):
        client.upload_file(str(path), b.model, f"tiny-llama/{path.name}")
    return b


def run(buckets: Buckets, tmp_path: Path, train_uri: str, out: str = "run", **hp) -> dict:
    """train() in-process on train_uri; artifacts go to s3://<output>/<out>/."""
    hyperparameters = {
        "epoch": EPOCHS,
        "learning_rate": 2e-3,
        "per_device_train_batch_size": BATCH,
        "max_input_length": BLOCK,
        "merge_weights": False,  # merged weights are test_train's concern; they cost time here
        **hp,
    }
    config = TrainerConfig.model_validate(
        {
            "job": {"name": "formats", "namespace": "test", "uid": f"uid-{out}"},
            "model": {"modelId": "tiny-llama", "source": f"s3://{buckets.model}/tiny-llama/"},
            "data": {"train": train_uri},
            "hyperparameters": Hyperparameters(**hyperparameters).model_dump(),
            "output": {"uri": f"s3://{buckets.output}/{out}/"},
        }
    )
    return train(config, Runtime.from_env({"KUBETUNE_SCRATCH": str(tmp_path / "scratch")}))


def read_json(bucket: str, key: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(bucket: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def assert_learned_and_complete(
    metrics: TrainingMetrics, buckets: Buckets, out: str = "run", epochs: int = EPOCHS
) -> None:
    losses = [e.eval_loss for e in metrics.epochs]
    assert len(losses) == epochs and losses[-1] < losses[0], (out, losses)
    manifest = read_json(buckets.output, f"{out}/MANIFEST.json")
    listed = {f["path"]: f["size"] for f in manifest["files"]}
    assert {"adapter/adapter_model.safetensors", "metrics.json"} <= listed.keys()
    client = boto3.client("s3")
    for path, size in listed.items():
        head = client.head_object(Bucket=buckets.output, Key=f"{out}/{path}")
        assert head["ContentLength"] == size, path


def total_steps(buckets: Buckets, out: str = "run") -> int:
    return read_json(buckets.output, f"{out}/progress.json")["total_steps"]


def domain_steps(tokenizer, texts: list[str]) -> int:
    """JumpStart's arithmetic: each text + BOS + EOS in one stream, cut into BLOCK-token blocks
    (tail dropped), ceil(20%) held out, BATCH blocks per step, EPOCHS passes."""
    tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)
    blocks = tokens // BLOCK
    train_blocks = blocks - math.ceil(blocks * 0.2)
    return math.ceil(train_blocks / BATCH) * EPOCHS


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# --- domain adaptation --------------------------------------------------------------------


def test_domain_adaptation_from_csv_reads_the_text_column(buckets, tmp_path, tokenizer):
    texts = sentences(150)
    # The other column comes first and is long: were it read, the step count would show it.
    rows = [["notes", "text"]] + [
        [f"note {i}: " + "ignore me " * 10, t] for i, t in enumerate(texts)
    ]
    train_uri = buckets.put(f"s3://{buckets.data}/train/", {"data.csv": csv_text(rows)})

    metrics = run(buckets, tmp_path, train_uri)

    assert_learned_and_complete(metrics, buckets)
    assert total_steps(buckets) == domain_steps(tokenizer, texts)


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_domain_adaptation_from_json_without_text_field_reads_the_first_field(
    buckets, tmp_path, tokenizer, layout
):
    texts = sentences(150, seed=1)
    # "topic" is short: were it read, there would be fewer blocks, or none at all.
    records = [{"body": t, "topic": "animals"} for t in texts]
    # A .json file holds one JSON array, or JSON lines as a .jsonl file does.
    content = json.dumps(records) if layout == "array" else jsonl(records)
    train_uri = buckets.put(f"s3://{buckets.data}/corpus/", {"corpus.json": content})

    metrics = run(buckets, tmp_path, train_uri)

    assert_learned_and_complete(metrics, buckets)
    assert total_steps(buckets) == domain_steps(tokenizer, texts)


def test_domain_adaptation_from_txt(buckets, tmp_path, tokenizer):
    text = "\n".join(sentences(150, seed=2))  # one document
    train_uri = buckets.put(f"s3://{buckets.data}/train/", {"book.txt": text})

    metrics = run(buckets, tmp_path, train_uri)

    assert_learned_and_complete(metrics, buckets)
    assert total_steps(buckets) == domain_steps(tokenizer, [text])


# --- instruction tuning -------------------------------------------------------------------


def animal_records(n: int, seed: int = 0) -> list[dict]:
    """Dolly-style records whose responses hold 1 to 3 sentences: samples of varied length."""
    rng, texts = random.Random(seed), iter(sentences(3 * n, seed))
    return [
        {
            "instruction": "describe an animal",
            "context": "",
            "response": " and ".join(next(texts) for _ in range(rng.randint(1, 3))),
        }
        for _ in range(n)
    ]


def test_instruction_tuning_with_template_json(buckets, tmp_path):
    template = {"prompt": "{instruction}:", "completion": " {response}"}
    train_uri = buckets.put(
        f"s3://{buckets.data}/train/",
        {"template.json": json.dumps(template), "train.jsonl": jsonl(animal_records(120))},
    )

    metrics = run(buckets, tmp_path, train_uri, instruction_tuned=True, max_input_length=64)

    assert_learned_and_complete(metrics, buckets)


def test_instruction_tuning_with_the_default_template(buckets, tmp_path, tokenizer):
    records = animal_records(120, seed=3)
    prompt_tokens = len(tokenizer(DEFAULT_PROMPT.format(**records[0]))["input_ids"])
    train_uri = buckets.put(f"s3://{buckets.data}/train/", {"train.jsonl": jsonl(records)})

    # Room for the long default prompt plus the longest response: nothing dropped or cut.
    metrics = run(
        buckets, tmp_path, train_uri, instruction_tuned=True, max_input_length=prompt_tokens + 32
    )

    assert_learned_and_complete(metrics, buckets)


def test_packing_uses_fewer_steps_and_less_padding_than_one_sample_per_row(buckets, tmp_path):
    template = {"prompt": "{instruction}:", "completion": " {response}"}
    train_uri = buckets.put(
        f"s3://{buckets.data}/train/",
        {"template.json": json.dumps(template), "train.jsonl": jsonl(animal_records(120, 4))},
    )
    # 64-token rows hold several samples of 12 to 30 tokens.
    common = {"instruction_tuned": True, "max_input_length": 64, "epoch": 4}

    packed = run(buckets, tmp_path, train_uri, out="packed", packing=True, **common)
    padded = run(buckets, tmp_path, train_uri, out="padded", packing=False, **common)

    assert_learned_and_complete(packed, buckets, "packed", epochs=4)
    assert_learned_and_complete(padded, buckets, "padded", epochs=4)
    assert total_steps(buckets, "packed") < total_steps(buckets, "padded")
    # The same tokens are trained on, in fewer rows with less padding (padding / batch tokens).
    assert packed.train_tokens == padded.train_tokens > 0
    assert packed.padding_fraction < padded.padding_fraction


# --- data problems ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, hp, expected",
    [
        (
            {"a.csv": "text\nthe cat sat\n", "b.txt": "the dog ran"},
            {},
            "train: several data files (a.csv, b.txt); domain adaptation reads one",
        ),
        (
            {"train.jsonl": jsonl(animal_records(3)) + '{"instruction": "x", "response": "y"}\n'},
            {"instruction_tuned": True},
            "train.jsonl, line 4: field 'context' used by the default template is missing",
        ),
    ],
    ids=["two data files", "record without a template field"],
)
def test_data_problem_in_s3_fails_before_training_and_writes_no_manifest(
    buckets, tmp_path, files, hp, expected
):
    train_uri = buckets.put(f"s3://{buckets.data}/train/", files)

    with pytest.raises(DataError) as error:
        run(buckets, tmp_path, train_uri, **hp)

    assert expected in str(error.value), str(error.value)
    # The user's own URI, not the trainer's local copy, names the place to fix.
    assert str(error.value).startswith(f"s3://{buckets.data}/train"), str(error.value)
    assert "scratch" not in str(error.value)
    # Only the claim on the output prefix and the start: no MANIFEST.json, no checkpoint.
    assert keys(buckets.output) == ["run/job.json", "run/progress.json"]
    assert read_json(buckets.output, "run/progress.json")["state"] == "starting"
