"""The one tiny-model builder: a T5 that the Auto classes load and that trains (a finite loss
with labels, its tokenizer appending </s> like T5's), a Llama whose shape the caller may
change, and no torch for the operator."""

import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from kubetune.local.tiny_models import build_tiny_llama, build_tiny_t5, build_tokenizer

TEXTS = ["translate to French: the cat sat on the mat", "le chat est assis sur le tapis"] * 20


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5")
    tokenizer = build_tokenizer(TEXTS, path, vocab_size=300, model_max_length=512, style="t5")
    build_tiny_t5(path, len(tokenizer), tokenizer=tokenizer)
    return path


def test_the_t5_tokenizer_appends_eos_and_adds_no_bos(t5_dir):
    tokenizer = AutoTokenizer.from_pretrained(t5_dir)
    ids = tokenizer("the cat sat")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.convert_ids_to_tokens(ids[-1]) == "</s>"
    assert tokenizer.bos_token is None and ids.count(tokenizer.eos_token_id) == 1
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)  # T5's ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the cat sat"


def test_the_t5_loads_with_the_auto_class_and_gives_a_finite_loss(t5_dir):
    config = AutoConfig.from_pretrained(t5_dir)
    assert config.model_type == "t5" and config.is_encoder_decoder
    assert config.decoder_start_token_id == config.pad_token_id == 0
    assert config.num_layers == config.num_decoder_layers == 2 and config.d_model == 64
    tokenizer = AutoTokenizer.from_pretrained(t5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
    assert config.vocab_size == len(tokenizer)
    inputs = tokenizer([TEXTS[0]], return_tensors="pt")
    labels = tokenizer([TEXTS[1]], return_tensors="pt")["input_ids"]
    loss = model(**inputs, labels=labels).loss
    # Random weights: about ln(vocab) per token, neither uniform nor wildly confident.
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(len(tokenizer))) < 2
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_same_weights_every_time(tmp_path):
    a = build_tiny_t5(tmp_path / "a", 64)
    b = build_tiny_t5(tmp_path / "b", 64)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_a_llama_with_its_shape_overridden_and_a_bos_first_tokenizer(tmp_path):
    tokenizer = build_tokenizer(TEXTS, tmp_path, vocab_size=300)
    shape = {"hidden_size": 32, "num_hidden_layers": 1}
    build_tiny_llama(tmp_path, len(tokenizer), tokenizer=tokenizer, **shape)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    assert model.config.intermediate_size == 128  # the default shape otherwise
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("the cat")["input_ids"][0] == loaded.bos_token_id == model.config.bos_token_id


def test_the_operator_never_imports_the_builder_or_torch():
    code = (
        "import sys, kubetune.controller.handlers, kubetune.cli.main; "
        "print(sorted({'torch', 'transformers', 'kubetune.local.tiny_models'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
