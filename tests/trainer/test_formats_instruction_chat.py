"""Instruction records through a chat template (the chat_template hyperparameter): each record a
user turn (the template's prompt) and an assistant turn (its completion), the loss on the
assistant turn only, and what prompt.json records for `kubetune generate`."""

import json

import pytest
from transformers import AutoTokenizer

from kubetune.api.templates import CHAT_COMPLETION, CHAT_PROMPT
from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.chat_templates import LLAMA3
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError
from tests.support.data_files import write, write_jsonl
from tests.support.tiny_models import build_tokenizer

CORPUS = ["How many replicas does billing run? Three replicas, on port 8080.", "context answer"]
# Written here, not taken from the product: the spans are checked against an independent one.
OWN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
RECORDS = [
    {"instruction": f"How many replicas does billing run {i}?", "context": "", "response": "Three."}
    for i in range(6)
]


def make_tokenizer(path, special_tokens: list[str], template: str | None):
    built = build_tokenizer(CORPUS, path)
    built.add_special_tokens({"additional_special_tokens": special_tokens})
    if template:
        built.chat_template = template
    built.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A tokenizer with its own ChatML template, as SmolLM2-Instruct's."""
    path = tmp_path_factory.mktemp("chatml-tok")
    return make_tokenizer(path, ["<|im_start|>", "<|im_end|>"], OWN_TEMPLATE)


def load(tokenizer, train, **hyperparameters):
    chosen = FORMATS.choose("instruction", None, "spec.trainer.dataFormat")
    hp = Hyperparameters(instruction_tuned=True, validation_split_ratio=0.5, **hyperparameters)
    return chosen.part.load(Channels(train), hp, tokenizer, chosen.options)


def split_text(tokenizer, sample) -> tuple[str, str]:
    """(the text before the loss, the text with loss) of one sample; after the loss at most
    the whitespace that separates turns."""
    labelled = [i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX]
    first, last = labelled[0], labelled[-1]
    assert labelled == list(range(first, last + 1))
    assert tokenizer.decode(sample.input_ids[last + 1 :]).strip() == ""
    answer = tokenizer.decode(sample.input_ids[first : last + 1])
    return tokenizer.decode(sample.input_ids[:first]), answer


def test_records_become_a_user_and_an_assistant_turn_of_the_tokenizers_template(tok, tmp_path):
    write_jsonl(tmp_path, "train.jsonl", RECORDS)
    splits = load(tok, tmp_path, chat_template="tokenizer")
    for sample in splits.train + splits.validation:
        prompt, answer = split_text(tok, sample)
        assert prompt.startswith("<|im_start|>user\nHow many replicas does billing run ")
        assert prompt.endswith("?<|im_end|>\n<|im_start|>assistant\n")  # context "" trimmed
        assert answer == "Three.<|im_end|>"  # the answer and its end of turn, not the newline
    assert splits.prompt.data_format == "instruction"
    assert (splits.prompt.prompt, splits.prompt.completion) == (CHAT_PROMPT, CHAT_COMPLETION)
    assert splits.prompt.chat_template == tok.get_chat_template()


def test_the_train_channels_template_json_writes_the_user_turn(tok, tmp_path):
    write_jsonl(tmp_path, "train.jsonl", RECORDS)
    template = {"prompt": "Q: {instruction}", "completion": "A: {response}"}
    write(tmp_path, "template.json", json.dumps(template))
    splits = load(tok, tmp_path, chat_template="tokenizer")
    prompt, answer = split_text(tok, splits.train[0])
    assert prompt.startswith("<|im_start|>user\nQ: How many replicas")
    assert answer == "A: Three.<|im_end|>"
    assert splits.prompt.prompt == "Q: {instruction}"


def test_a_named_template_for_a_tokenizer_without_one(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok", list(LLAMA3.markers), None)
    write_jsonl(tmp_path / "data", "train.jsonl", RECORDS)
    splits = load(tokenizer, tmp_path / "data", chat_template="llama3")
    prompt, answer = split_text(tokenizer, splits.train[0])
    assert "<|start_header_id|>user<|end_header_id|>\n\nHow many replicas" in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert answer == "Three.<|eot_id|>"
    assert splits.prompt.chat_template == LLAMA3.jinja


def test_the_tokenizers_template_where_it_has_none_is_a_data_error(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok", [], None)
    write_jsonl(tmp_path / "data", "train.jsonl", RECORDS)
    with pytest.raises(DataError) as err:
        load(tokenizer, tmp_path / "data", chat_template="tokenizer")
    assert str(err.value) == (
        "the chat_template hyperparameter is 'tokenizer', but the model's tokenizer has no chat "
        "template; choose one of chatml, llama3"
    )


def test_without_chat_template_the_plain_template_and_its_special_tokens(tok, tmp_path):
    write_jsonl(tmp_path, "train.jsonl", RECORDS)
    splits = load(tok, tmp_path)
    assert splits.prompt.chat_template is None
    assert splits.prompt.prompt.startswith("Below is an instruction")  # JumpStart's default
    prompt, answer = split_text(tok, splits.train[0])
    assert "<|im_start|>" not in prompt and answer.startswith(" Three.")
