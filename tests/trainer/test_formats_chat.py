"""The `chat` data format: conversations through a chat template, loss on assistant turns only,
with a real tokenizer that has a chat template of its own (ChatML, as SmolLM2's)."""

import json
import logging

import pytest
from transformers import AutoTokenizer

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.chat import ChatOptions
from kubetune_trainer.formats.chat_templates import CHATML, LLAMA3
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError
from kubetune_trainer.registry import PartError
from tests.support.data_files import write, write_jsonl
from tests.support.tiny_models import build_tokenizer

CORPUS = [
    "You are a helpful assistant for Kubernetes operators.",
    "How do I list pods? Run kubectl get pods in the namespace.",
    "What is LoRA? Low-rank matrices added to a frozen model.",
    "system user assistant answer question thanks welcome",
]
# The usual ChatML template, as a hub tokenizer ships it (written here, not taken from the
# product, so that the test checks the product's spans against an independent template).
OWN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
LLAMA3_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def conversation(i: int, turns: int = 1, system: bool = False) -> dict:
    messages = [{"role": "system", "content": "You are a helpful assistant."}] if system else []
    for t in range(turns):
        messages.append({"role": "user", "content": f"How do I list pods {i}.{t}?"})
        messages.append({"role": "assistant", "content": f"Run kubectl get pods {i}.{t}."})
    return {"messages": messages}


RECORDS = [conversation(i, turns=1 + i % 3, system=i % 2 == 0) for i in range(10)]


def make_tokenizer(path, special_tokens: list[str], template: str | None):
    built = build_tokenizer(CORPUS, path)
    built.add_special_tokens({"additional_special_tokens": special_tokens})
    if template:
        built.chat_template = template
    built.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)  # as the trainer loads a model folder


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A tokenizer with its own ChatML chat template and ChatML's markers as tokens."""
    return make_tokenizer(tmp_path_factory.mktemp("chat-tok"), CHATML_TOKENS, OWN_TEMPLATE)


@pytest.fixture(scope="module")
def plain_tok(tmp_path_factory):
    """A tokenizer without a chat template; it knows the markers of both named templates."""
    path = tmp_path_factory.mktemp("plain-tok")
    return make_tokenizer(path, CHATML_TOKENS + LLAMA3_TOKENS, None)


def hp(**overrides) -> Hyperparameters:
    return Hyperparameters(**overrides)


def load(tokenizer, train, validation=None, options=None, **overrides):
    chosen = FORMATS.choose("chat", options, "spec.data.format")
    channels = Channels(train, validation)
    return chosen.part.load(channels, hp(**overrides), tokenizer, chosen.options)


def labelled_runs(tokenizer, sample) -> list[str]:
    """The decoded text of each run of consecutive labelled tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token  # causal layout: the label is the token itself
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def assistant_texts(record: dict) -> list[str]:
    return [m["content"] for m in record["messages"] if m["role"] == "assistant"]


# --- rendering and loss spans --------------------------------------------------------------


def test_loss_covers_exactly_the_assistant_turns(tok, tmp_path):
    write_jsonl(tmp_path / "train", "a.jsonl", RECORDS[:6])
    write_jsonl(tmp_path / "train", "b.jsonl", RECORDS[6:])  # files are read in name order
    write_jsonl(tmp_path / "val", "val.jsonl", RECORDS[:2])
    splits = load(tok, tmp_path / "train", tmp_path / "val")

    assert len(splits.train) == len(RECORDS) and len(splits.validation) == 2
    for sample, record in zip(splits.train, RECORDS, strict=True):
        rendered = tok.apply_chat_template(record["messages"], tokenize=False)
        assert tok.decode(sample.input_ids) == rendered
        assert sample.input_ids == tok(rendered, add_special_tokens=False)["input_ids"]
        # Each assistant turn's content and its end-of-turn marker; no header, no newline.
        assert labelled_runs(tok, sample) == [a + "<|im_end|>" for a in assistant_texts(record)]
    assert splits.max_length == 1024


def test_without_a_tokenizer_template_chatml_is_the_default(plain_tok, tmp_path, caplog):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    with caplog.at_level(logging.INFO):
        splits = load(plain_tok, tmp_path / "train")

    every = sorted(splits.train + splits.validation)
    expected = []
    for record in RECORDS:
        text = plain_tok.apply_chat_template(
            record["messages"], chat_template=CHATML.jinja, tokenize=False
        )
        expected.append(plain_tok(text, add_special_tokens=False)["input_ids"])
    assert sorted(s.input_ids for s in every) == sorted(expected)
    assert "chat: chatml template" in caplog.text


def test_llama3_template_trims_content_and_ends_turns_with_eot(plain_tok, tmp_path):
    records = [
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "How do I list pods?"},
                {"role": "assistant", "content": "  Run kubectl get pods.\n"},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": "Welcome."},
            ]
        }
    ] * 2
    write_jsonl(tmp_path / "train", "train.jsonl", records)
    splits = load(plain_tok, tmp_path / "train", options={"template": "llama3"})

    (sample,) = splits.train
    text = plain_tok.decode(sample.input_ids)
    assert text.startswith("<s><|start_header_id|>system<|end_header_id|>\n\nYou are")
    rendered = plain_tok.apply_chat_template(
        records[0]["messages"], chat_template=LLAMA3.jinja, tokenize=False
    )
    assert text == rendered
    assert labelled_runs(plain_tok, sample) == [
        "Run kubectl get pods.<|eot_id|>",
        "Welcome.<|eot_id|>",
    ]


def test_the_tokenizer_template_may_be_asked_for_by_name(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    named = load(tok, tmp_path / "train", options={"template": "tokenizer"})
    assert named == load(tok, tmp_path / "train")


def test_markers_that_are_not_tokens_are_warned_about(tmp_path, caplog):
    bare = make_tokenizer(tmp_path / "bare", [], None)
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    splits = load(bare, tmp_path / "train", options={"template": "chatml"})
    assert splits.train  # still trains: the markers are learnt as text
    assert "chat template chatml: <|im_start|>, <|im_end|> not token(s)" in caplog.text
    for sample in splits.train:
        assert all(run.rstrip().endswith("<|im_end|>") for run in labelled_runs(bare, sample))


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    # Closes the conversation differently from a turn followed by more turns: no prefix
    # rendering can then tell where an assistant turn ends.
    odd = OWN_TEMPLATE.replace("'<|im_end|>' + '\n'", "('' if loop.last else '<|im_end|>\n')")
    weird = make_tokenizer(tmp_path / "weird", CHATML_TOKENS, odd)
    write_jsonl(tmp_path / "train", "train.jsonl", [conversation(0, turns=2)] * 2)
    with pytest.raises(DataError) as error:
        load(weird, tmp_path / "train")
    message = str(error.value)
    assert "train.jsonl, line " in message
    assert "renders message 2 differently once later messages follow" in message


def test_a_tokenizer_template_asked_for_but_missing(plain_tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    with pytest.raises(DataError, match="options.template is 'tokenizer', but the model's"):
        load(plain_tok, tmp_path / "train", options={"template": "tokenizer"})


def test_unknown_template_is_refused_with_its_field_path():
    with pytest.raises(PartError) as error:
        FORMATS.choose("chat", {"template": "vicuna"}, "spec.data.format")
    assert "spec.data.format.options.template: Input should be" in str(error.value)
    assert ChatOptions().template is None


# --- truncation, split and caps ------------------------------------------------------------


def test_long_conversations_are_truncated_and_hopeless_ones_dropped(tok, tmp_path, caplog):
    long_answer = "Run kubectl get pods in the namespace. " * 8
    long_question = "How do I list pods in the namespace? " * 8
    records = [
        {
            "messages": [
                {"role": "user", "content": "pods?"},
                {"role": "assistant", "content": long_answer},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": long_question},
                {"role": "assistant", "content": "kubectl get pods"},
            ]
        },
        conversation(0),
    ]
    write_jsonl(tmp_path / "train", "train.jsonl", records)
    write_jsonl(tmp_path / "val", "val.jsonl", records[2:])
    splits = load(tok, tmp_path / "train", tmp_path / "val", max_input_length=40)

    truncated, short = splits.train
    assert len(truncated.input_ids) == len(truncated.labels) == 40
    assert truncated.labels[-1] != IGNORE_INDEX  # cut inside the assistant turn
    assert labelled_runs(tok, short) == ["Run kubectl get pods 0.0.<|im_end|>"]
    assert splits.validation == [short]
    assert (
        "train: 1 of 3 conversations dropped (no assistant token within 40 tokens), "
        "1 truncated to 40 tokens (max_input_length)"
    ) in caplog.text


def test_no_conversation_left_is_a_data_error(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    with pytest.raises(DataError) as error:
        load(tok, tmp_path / "train", max_input_length=4)
    assert str(tmp_path / "train") in str(error.value)
    assert "no sample left: none of the 8 conversations has an assistant token within 4" in str(
        error.value
    )


def test_split_and_caps_count_conversations(tok, tmp_path):
    write_jsonl(tmp_path / "train", "train.jsonl", RECORDS)
    full = load(tok, tmp_path / "train")
    assert (len(full.train), len(full.validation)) == (8, 2)  # ceil(20% of 10 records)
    assert full == load(tok, tmp_path / "train")  # seeded
    capped = load(tok, tmp_path / "train", max_train_samples=3, max_val_samples=1)
    assert capped.train == full.train[:3]
    assert capped.validation == full.validation[:1]


def test_a_json_list_of_records_and_worker_processes(tok, tmp_path):
    write_jsonl(tmp_path / "lines", "train.jsonl", RECORDS)
    write(tmp_path / "list", "train.json", json.dumps(RECORDS, indent=2))
    alone = load(tok, tmp_path / "lines")
    assert load(tok, tmp_path / "list") == alone
    assert load(tok, tmp_path / "lines", preprocessing_num_workers=2) == alone


# --- data problems -------------------------------------------------------------------------

USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "hello"}
SYSTEM = {"role": "system", "content": "be brief"}
ROLES = "(allowed: system, user, assistant)"
DATA_ERRORS = {
    "not an object": (['"just a string"'], "line 1: expected a JSON object, got str"),
    "no messages": ([{"conversations": []}], "line 1: no 'messages' list; a chat record is"),
    "messages not a list": ([{"messages": {"role": "user"}}], "'messages' must be a list"),
    "empty messages": ([{"messages": []}], "line 1: 'messages' is empty"),
    "message not an object": (
        [{"messages": [USER, "hello"]}],
        "line 1: message 2 must be a JSON object with 'role' and 'content', got str",
    ),
    "unknown role": (
        [{"messages": [USER, {"role": "bot", "content": "x"}]}],
        f"message 2: unknown role 'bot' {ROLES}",
    ),
    "no role": ([{"messages": [{"content": "x"}]}], f"message 1: no 'role' {ROLES}"),
    "no content": ([{"messages": [USER, {"role": "assistant"}]}], "2 (assistant): no 'content'"),
    "content not a string": (
        [{"messages": [{"role": "user", "content": ["hi"]}, ASSISTANT]}],
        "message 1 (user): 'content' must be a string, got list",
    ),
    "no assistant": ([{"messages": [SYSTEM, USER]}], "line 1: no assistant message"),
    "system later": (
        [{"messages": [USER, SYSTEM, ASSISTANT]}],
        "message 2 (system): a system message may only come first",
    ),
    "assistant first": (
        [{"messages": [ASSISTANT, USER]}],
        "message 1 (assistant): expected role 'user'; after an optional system message",
    ),
    "two user turns": (
        [{"messages": [USER, USER, ASSISTANT]}],
        "message 2 (user): expected role 'assistant'",
    ),
    "invalid json": (["{oops"], "line 1: invalid JSON"),
    "bad second record": (
        [conversation(0), {"messages": [USER, {"role": "tool", "content": "x"}]}],
        "train.jsonl, line 2: message 2: unknown role 'tool'",
    ),
}


@pytest.mark.parametrize("records, expected", DATA_ERRORS.values(), ids=DATA_ERRORS.keys())
def test_data_problems_name_the_file_the_line_and_the_rule(tok, tmp_path, records, expected):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path = write(tmp_path / "train", "train.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        load(tok, tmp_path / "train")
    message = str(error.value)
    assert message.startswith(f"{path}, line ")
    assert expected in message


def test_json_list_errors_name_the_record(tok, tmp_path):
    path = write(tmp_path / "train", "train.json", json.dumps([conversation(0), {"messages": []}]))
    with pytest.raises(DataError, match="record 2: 'messages' is empty") as error:
        load(tok, tmp_path / "train")
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({".kubetune-complete": ""}, "no data file (the chat format expects .jsonl files)"),
        ({"train.jsonl": "", "notes.csv": "a"}, "unsupported file(s) notes.csv"),
    ],
)
def test_channel_problems(tok, tmp_path, files, expected):
    for name, content in files.items():
        write(tmp_path / "train", name, content)
    with pytest.raises(DataError) as error:
        load(tok, tmp_path / "train")
    assert str(error.value).startswith(f"{tmp_path / 'train'}: ")
    assert expected in str(error.value)
