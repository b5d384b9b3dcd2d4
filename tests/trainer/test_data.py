"""The JumpStart data formats `domain-adaptation` and `instruction` (kubetune_trainer.formats):
files to tokenized samples, with a real tokenizer, loaded through the registry as the recipe
does."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from kubetune.api.v1alpha1.hyperparameters import Hyperparameters
from kubetune_trainer import data
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.encoder import effective_max_length
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits
from kubetune_trainer.formats.templates import DEFAULT_COMPLETION, DEFAULT_PROMPT
from kubetune_trainer.registry import NoOptions
from tests.support.data_files import write, write_jsonl
from tests.support.tiny_models import build_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Kubernetes schedules pods onto nodes; operators reconcile custom resources.",
    "LoRA adapts a frozen model with low-rank matrices added to attention layers.",
    "Below is an instruction that describes a task, paired with an input.",
    "Write a response that appropriately completes the request.",
    "### Instruction: ### Input: ### Response: summarize translate answer question",
]
RECORDS = [
    {
        "instruction": f"Summarize item {i}.",
        "context": f"Item {i} is a fox.",
        "response": f"A fox {i}.",
    }
    for i in range(10)
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(CORPUS, path)
    # Loaded back the way the trainer loads a model folder.
    return AutoTokenizer.from_pretrained(path)


def hp(**overrides) -> Hyperparameters:
    return Hyperparameters(**overrides)


def load_splits(train: Path, validation: Path | None, hp: Hyperparameters, tok) -> Splits:
    """The JumpStart choice, through the registry as the recipe calls a format."""
    name = "instruction" if hp.instruction_tuned else "domain-adaptation"
    return FORMATS.get(name, "test").load(Channels(train, validation), hp, tok, NoOptions())


def stream(tok, texts: list[str]) -> list[int]:
    """The token stream domain adaptation cuts: each text with BOS, then EOS."""
    return [i for t in texts for i in [*tok(t)["input_ids"], tok.eos_token_id]]


def blocks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]


def instruction_sample(tok, record, prompt=DEFAULT_PROMPT, completion=DEFAULT_COMPLETION):
    prompt_ids = tok(prompt.format(**record))["input_ids"]
    completion_ids = tok(completion.format(**record), add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + completion_ids + [tok.eos_token_id]
    return Sample(input_ids, [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :])


@pytest.fixture
def val_dir(tmp_path):
    """A validation channel, so the train split holds every training sample."""
    write(tmp_path / "val", "val.txt", " ".join(CORPUS))
    return tmp_path / "val"


# --- domain adaptation formats ------------------------------------------------------------

DOMAIN_FILES = {
    "csv with text column": (
        "data.csv",
        'id,text\n1,"The quick brown fox, twice."\n2,Operators reconcile resources.\n',
        ["The quick brown fox, twice.", "Operators reconcile resources."],
    ),
    "csv first column": (
        "data.csv",
        "body,label\nLoRA adapts a frozen model.,1\nPods run on nodes.,0\n",
        ["LoRA adapts a frozen model.", "Pods run on nodes."],
    ),
    "json list without text": (
        "data.json",
        json.dumps([{"body": "The lazy dog.", "n": 1}, {"body": "The river bank.", "n": 2}]),
        ["The lazy dog.", "The river bank."],
    ),
    "json holding json lines": (
        "data.json",
        '{"text": "The lazy dog."}\n{"text": "The river bank."}\n',
        ["The lazy dog.", "The river bank."],
    ),
    "json list of strings": (
        "data.json",
        json.dumps(["The lazy dog.", "The river bank."]),
        ["The lazy dog.", "The river bank."],
    ),
    "jsonl with text": (
        "data.jsonl",
        '{"title": "x", "text": "The lazy dog."}\n\n{"title": "y", "text": "Quick fox."}\n',
        ["The lazy dog.", "Quick fox."],
    ),
    "txt is one text": (
        "data.txt",
        "First line of a book.\nSecond line, same document.\n",
        ["First line of a book.\nSecond line, same document.\n"],
    ),
}


@pytest.mark.parametrize("name, content, texts", DOMAIN_FILES.values(), ids=DOMAIN_FILES.keys())
def test_domain_adaptation_reads_each_format(tok, tmp_path, val_dir, name, content, texts):
    write(tmp_path / "train", name, content)
    write(tmp_path / "train", ".kubetune-complete", "")  # download marker: not data
    splits = load_splits(tmp_path / "train", val_dir, hp(max_input_length=4), tok)

    expected = blocks(stream(tok, texts), 4)
    assert [s.input_ids for s in splits.train] == expected
    assert all(s.labels == s.input_ids for s in splits.train)


def test_blocks_are_full_and_the_tail_is_dropped(tok, tmp_path, val_dir):
    text = " ".join(CORPUS * 3)
    write(tmp_path / "train", "book.txt", text)
    splits = load_splits(tmp_path / "train", val_dir, hp(max_input_length=16), tok)

    total = len(stream(tok, [text]))
    assert total % 16 != 0  # so a tail exists and is dropped
    assert len(splits.train) == total // 16
    assert {len(s.input_ids) for s in splits.train + splits.validation} == {16}
    assert splits.max_length == 16


def test_caps_apply_to_blocks_after_grouping(tok, tmp_path, val_dir):
    write(tmp_path / "train", "book.txt", " ".join(CORPUS))
    full = load_splits(tmp_path / "train", val_dir, hp(max_input_length=8), tok)
    capped = load_splits(
        tmp_path / "train",
        val_dir,
        hp(max_input_length=8, max_train_samples=2, max_val_samples=1),
        tok,
    )
    assert capped.train == full.train[:2]
    assert capped.validation == full.validation[:1]


# --- instruction tuning -------------------------------------------------------------------


def test_instruction_tuning_default_template(tok, tmp_path):
    write_jsonl(tmp_path / "train", "a.jsonl", RECORDS[:6])
    write_jsonl(tmp_path / "train", "b.jsonl", RECORDS[6:])  # files are read in name order
    write_jsonl(tmp_path / "val", "val.jsonl", RECORDS[:2])
    splits = load_splits(tmp_path / "train", tmp_path / "val", hp(instruction_tuned=True), tok)

    assert splits.train == [instruction_sample(tok, r) for r in RECORDS]
    assert splits.validation == [instruction_sample(tok, r) for r in RECORDS[:2]]
    for sample, record in zip(splits.train, RECORDS, strict=True):
        prompt_len = len(tok(DEFAULT_PROMPT.format(**record))["input_ids"])
        assert len(sample.labels) == len(sample.input_ids)
        assert sample.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
        assert IGNORE_INDEX not in sample.labels[prompt_len:]
        assert sample.input_ids[-1] == tok.eos_token_id
    assert tok.decode(splits.train[0].input_ids, skip_special_tokens=True) == (
        DEFAULT_PROMPT.format(**RECORDS[0]) + " " + RECORDS[0]["response"]
    )


def test_instruction_tuning_with_template_json(tok, tmp_path):
    template = {"prompt": "Q: {question}\n{{literal braces}}\nA:", "completion": " {answer}"}
    records = [{"question": f"What is {i}?", "answer": f"It is {i}.", "extra": 1} for i in range(4)]
    write(tmp_path / "train", "template.json", json.dumps(template))
    write_jsonl(tmp_path / "train", "train.jsonl", records)
    write_jsonl(tmp_path / "val", "val.jsonl", records[:1])
    splits = load_splits(tmp_path / "train", tmp_path / "val", hp(instruction_tuned=True), tok)

    expected = [
        instruction_sample(tok, r, template["prompt"], template["completion"]) for r in records
    ]
    assert splits.train == expected
    assert "{literal braces}" in tok.decode(splits.train[0].input_ids)


def test_validation_uses_the_training_template(tok, tmp_path, caplog):
    template = {"prompt": "Q: {question}\nA:", "completion": " {answer}"}
    records = [{"question": f"What is {i}?", "answer": f"It is {i}."} for i in range(3)]
    write(tmp_path / "train", "template.json", json.dumps(template))
    write_jsonl(tmp_path / "train", "train.jsonl", records)
    write(tmp_path / "val", "template.json", json.dumps({"prompt": "{x}", "completion": "{y}"}))
    write_jsonl(tmp_path / "val", "val.jsonl", records[:1])
    splits = load_splits(tmp_path / "train", tmp_path / "val", hp(instruction_tuned=True), tok)

    assert splits.validation == [instruction_sample(tok, records[0], **template)]
    assert f"{tmp_path / 'val' / 'template.json'}: ignored" in caplog.text


def test_a_channel_may_be_a_single_file(tok, tmp_path):
    train = write_jsonl(tmp_path / "train", "train.jsonl", RECORDS[:4])
    val = write_jsonl(tmp_path / "val", "val.jsonl", RECORDS[4:5])
    write(tmp_path / "val", "notes.md", "not read: a file channel is that file alone")
    splits = load_splits(train, val, hp(instruction_tuned=True), tok)
    assert splits.train == [instruction_sample(tok, r) for r in RECORDS[:4]]
    assert splits.validation == [instruction_sample(tok, RECORDS[4])]


def test_long_samples_are_truncated_and_long_prompts_dropped(tok, tmp_path, caplog):
    template = {"prompt": "{instruction}", "completion": " {response}"}
    records = [
        {"instruction": "fox", "response": "the quick brown fox jumps over the lazy dog " * 3},
        {"instruction": "the quick brown fox jumps over the lazy dog " * 3, "response": "dog"},
        {"instruction": "dog", "response": "lazy"},
    ]
    write(tmp_path / "train", "template.json", json.dumps(template))
    write_jsonl(tmp_path / "train", "train.jsonl", records)
    write_jsonl(tmp_path / "val", "val.jsonl", records[2:])
    with caplog.at_level(logging.INFO, logger="kubetune_trainer.formats.instruction"):
        splits = load_splits(
            tmp_path / "train",
            tmp_path / "val",
            hp(instruction_tuned=True, max_input_length=12),
            tok,
        )

    truncated, short = splits.train
    full = instruction_sample(tok, records[0], template["prompt"], template["completion"])
    assert truncated == Sample(full.input_ids[:12], full.labels[:12])
    assert short == instruction_sample(tok, records[2], template["prompt"], template["completion"])
    assert "1 of 3 samples dropped (prompt of 12 tokens or more), 1 truncated" in caplog.text


@pytest.mark.parametrize(
    "placeholder",
    [
        "{instruction.__class__}",
        "{instruction[0]}",
        "{0}",
        "{}",
        "{instruction!r}",
        "{instruction:>9}",
    ],
)
def test_safe_formatter_refuses_more_than_field_names(tok, tmp_path, placeholder):
    template = {"prompt": f"Do this: {placeholder}", "completion": " {response}"}
    path = write(tmp_path / "train", "template.json", json.dumps(template))
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    with pytest.raises(DataError) as error:
        load_splits(tmp_path / "train", None, hp(instruction_tuned=True), tok)
    assert str(path) in str(error.value)
    assert f"unsafe placeholder {placeholder}" in str(error.value)


# --- data problems ------------------------------------------------------------------------


def _case(files: dict, instruction_tuned=False, **overrides):
    return files, dict(instruction_tuned=instruction_tuned, **overrides)


LATIN1 = "Caf\u00e9 cr\u00e8me".encode("latin-1")
DATA_ERRORS = {
    "no data file": (
        _case({".kubetune-complete": "", ".DS_Store": "x"}),
        ["train:", "no data file"],
    ),
    "no jsonl file": (
        _case({"template.json": '{"prompt": "{q}", "completion": "{a}"}'}, True),
        ["train:", "no data file"],
    ),
    "several files": (
        _case({"a.csv": "text\nx\n", "b.txt": "y"}),
        ["train:", "several data files (a.csv, b.txt)"],
    ),
    "unsupported extension": (
        _case({"data.parquet": "x"}),
        ["data.parquet", "unsupported file type '.parquet'"],
    ),
    "unsupported file for instruction tuning": (
        _case({"train.jsonl": json.dumps(RECORDS[0]), "notes.csv": "a"}, True),
        ["train:", "unsupported file(s) notes.csv"],
    ),
    "empty csv header": (_case({"data.csv": ",\nfox,dog\n"}), ["data.csv", "header row is empty"]),
    "empty csv file": (_case({"data.csv": ""}), ["data.csv", "header row is empty"]),
    "json records are numbers": (
        _case({"data.json": "[1, 2]"}),
        ["data.json, record 1", "no usable column", "got int"],
    ),
    "jsonl records mixed": (
        _case({"data.jsonl": '{"text": "a"}\n["b"]\n'}),
        ["data.jsonl, line 2", "no usable column", "got list"],
    ),
    "text field not a string": (
        _case({"data.jsonl": '{"text": "a"}\n{"text": {"b": 1}}\n'}),
        ["data.jsonl, line 2", "field 'text' must be a string"],
    ),
    "template field missing": (
        _case({"train.jsonl": json.dumps(RECORDS[0]) + "\n" + '{"instruction": "x"}\n'}, True),
        ["train.jsonl, line 2", "field 'context'", "the default template", "missing"],
    ),
    "template.json field missing": (
        _case(
            {
                "template.json": '{"prompt": "{question}", "completion": "{answer}"}',
                "train.jsonl": '{"question": "q"}\n',
            },
            True,
        ),
        ["train.jsonl, line 1", "field 'answer'", "template.json", "missing"],
    ),
    "template.json not json": (
        _case({"template.json": "{prompt: x}", "train.jsonl": "{}\n"}, True),
        ["template.json", "not valid JSON"],
    ),
    "template.json without completion": (
        _case({"template.json": '{"prompt": "{instruction}"}', "train.jsonl": "{}\n"}, True),
        ["template.json", "'prompt' and 'completion'"],
    ),
    "template.json unbalanced brace": (
        _case({"template.json": '{"prompt": "{instruction", "completion": ""}'}, True),
        ["template.json: prompt", "invalid format string"],
    ),
    "invalid json line": (
        _case({"train.jsonl": "\n".join(json.dumps(r) for r in RECORDS[:2]) + "\n{oops\n"}, True),
        ["train.jsonl, line 3", "invalid JSON"],
    ),
    "invalid json list": (_case({"data.json": '[{"text": "a"},\n oops]'}), ["data.json, line 2"]),
    "instruction record not an object": (
        _case({"train.jsonl": '"just a string"\n'}, True),
        ["train.jsonl, line 1", "expected a JSON object, got str"],
    ),
    "text shorter than one block": (
        _case({"data.txt": "fox"}),
        ["data.txt", "4 tokens, fewer than one block of 1024 tokens"],
    ),
    "every prompt too long": (
        _case({"train.jsonl": "\n".join(json.dumps(r) for r in RECORDS)}, True, max_input_length=8),
        ["train:", "no sample left: all 8 records have a prompt of 8 tokens or more"],
    ),
    "not utf-8": (_case({"data.txt": LATIN1}), ["data.txt", "not UTF-8"]),
    "not utf-8 jsonl": (_case({"train.jsonl": LATIN1}, True), ["train.jsonl", "not UTF-8"]),
    "too few samples to split": (
        _case({"train.jsonl": json.dumps(RECORDS[0])}, True),
        ["train:", "1 sample(s) cannot be split", "validation_split_ratio"],
    ),
}


@pytest.mark.parametrize("case, expected", DATA_ERRORS.values(), ids=DATA_ERRORS.keys())
def test_data_problems_name_the_file_and_the_reason(tok, tmp_path, case, expected):
    files, overrides = case
    for name, content in files.items():
        write(tmp_path / "train", name, content)
    with pytest.raises(DataError) as error:
        load_splits(tmp_path / "train", None, hp(**overrides), tok)
    message = str(error.value)
    assert str(tmp_path / "train") in message
    for fragment in expected:
        assert fragment in message


def test_missing_validation_folder_is_a_data_error(tok, tmp_path):
    write(tmp_path / "train", "data.txt", " ".join(CORPUS))
    with pytest.raises(DataError, match="val: no such data folder"):
        load_splits(tmp_path / "train", tmp_path / "val", hp(max_input_length=8), tok)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# --- validation split ---------------------------------------------------------------------


def _split(tok, train_dir, **overrides):
    return load_splits(train_dir, None, hp(instruction_tuned=True, **overrides), tok)


def test_validation_split_is_deterministic_and_respects_the_ratio(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    samples = [instruction_sample(tok, r) for r in RECORDS]

    first = _split(tok, tmp_path / "train")
    assert first == _split(tok, tmp_path / "train")
    assert (len(first.train), len(first.validation)) == (8, 2)  # 20% of 10
    assert sorted(first.train + first.validation) == sorted(samples)
    # Each side keeps file order.
    assert first.train == [s for s in samples if s in first.train]

    other = _split(tok, tmp_path / "train", train_data_split_seed=1)
    assert other.validation != first.validation
    assert sorted(other.train + other.validation) == sorted(samples)

    # ceil(10 * 0.25) = 3 held out, as datasets' train_test_split.
    quarter = _split(tok, tmp_path / "train", validation_split_ratio=0.25)
    assert (len(quarter.train), len(quarter.validation)) == (7, 3)
    # Never the whole set: at least one sample stays on each side.
    most = _split(tok, tmp_path / "train", validation_split_ratio=0.99)
    assert (len(most.train), len(most.validation)) == (1, 9)


def test_validation_channel_replaces_the_split(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS[:5])
    write_jsonl(tmp_path / "val", "val.jsonl", RECORDS[5:])
    splits = load_splits(tmp_path / "train", tmp_path / "val", hp(instruction_tuned=True), tok)
    assert splits.train == [instruction_sample(tok, r) for r in RECORDS[:5]]
    assert splits.validation == [instruction_sample(tok, r) for r in RECORDS[5:]]


def test_domain_adaptation_split_holds_out_blocks(tok, tmp_path):
    text = " ".join(CORPUS)
    write(tmp_path / "train", "data.txt", text)
    splits = load_splits(tmp_path / "train", None, hp(max_input_length=8), tok)
    every = [Sample(b, b) for b in blocks(stream(tok, [text]), 8)]
    assert len(splits.validation) == -(-len(every) * 2 // 10)  # ceil(20%)
    assert sorted(splits.train + splits.validation) == sorted(every)


def test_caps_apply_to_records_after_the_split(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    full = _split(tok, tmp_path / "train")
    capped = _split(tok, tmp_path / "train", max_train_samples=3, max_val_samples=1)
    assert capped.train == full.train[:3]
    assert capped.validation == full.validation[:1]


# --- max length and workers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "max_input_length, model_max_length, expected",
    [
        (-1, 2048, 1024),
        (-1, 512, 512),
        (-1, int(1e30), 1024),  # "no limit" as transformers records it
        (-1, None, 1024),
        (300, 512, 300),
        (600, 512, 512),
        (4096, int(1e30), 4096),
    ],
)
def test_effective_max_length(max_input_length, model_max_length, expected):
    tokenizer = SimpleNamespace(model_max_length=model_max_length)
    assert effective_max_length(hp(max_input_length=max_input_length), tokenizer) == expected


def test_effective_max_length_of_a_loaded_tokenizer(tok):
    assert tok.model_max_length == 2048
    assert effective_max_length(hp(), tok) == 1024


def test_worker_processes_give_identical_samples(tok, tmp_path):
    write_jsonl(tmp_path / "inst", "train.jsonl", RECORDS * 3)
    write(tmp_path / "text", "data.csv", "text\n" + "\n".join(f'"{c}"' for c in CORPUS * 5))
    for folder, overrides in [
        ("inst", {"instruction_tuned": True}),
        ("text", {"max_input_length": 8}),
    ]:
        alone = load_splits(tmp_path / folder, None, hp(**overrides), tok)
        pooled = load_splits(
            tmp_path / folder, None, hp(preprocessing_num_workers=2, **overrides), tok
        )
        assert pooled == alone
        assert alone.train


def test_load_splits_picks_the_jumpstart_format_by_instruction_tuned(tok, tmp_path):
    write_jsonl(tmp_path / "inst", "train.jsonl", RECORDS)
    write(tmp_path / "text", "data.txt", " ".join(CORPUS))
    for folder, overrides in [
        ("inst", {"instruction_tuned": True}),
        ("text", {"max_input_length": 8}),
    ]:
        assert data.load_splits(str(tmp_path / folder), None, hp(**overrides), tok) == (
            load_splits(tmp_path / folder, None, hp(**overrides), tok)
        )


def test_the_bundled_formats_are_registered():
    assert {"chat", "domain-adaptation", "instruction"} <= set(FORMATS.names())
