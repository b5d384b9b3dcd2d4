"""The `seq2seq-lm` model family on a tiny Flan-T5-shaped model, on CPU: rows from each data
format's samples, batches, the loss over a step's labels, real optimizer steps, and exported
artifacts that load back."""

import dataclasses
import logging

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, LlamaConfig, T5Config

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune.local.tiny_models import build_tiny_t5, build_tokenizer
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.samples import IGNORE_INDEX as I
from kubetune_trainer.formats.samples import Sample
from kubetune_trainer.model import ModelError
from kubetune_trainer.models import MODELS
from kubetune_trainer.models.seq2seq import Seq2SeqRow, target_modules
from kubetune_trainer.registry import NoOptions
from tests.support.data_files import write, write_jsonl

CPU = torch.device("cpu")
FAMILY = MODELS.get("seq2seq-lm", "test")
COLORS = ["red", "blue", "green", "black", "white", "pink", "gray", "gold"]
# A learnable mapping: the color word in, its index out.
PAIRS = [(f"Which number is {c}?", f"It is {i}.") for i, c in enumerate(COLORS)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-t5")
    texts = [f"{q} {a}" for q, a in PAIRS] * 4 + ["the quick brown fox jumps over the lazy dog"]
    tokenizer = build_tokenizer(texts, path, style="t5")
    build_tiny_t5(path, len(tokenizer), tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def tok(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)  # as the trainer loads it


def hp(**overrides) -> Hyperparameters:
    return Hyperparameters(**{"lora_r": 4, "merge_weights": True, **overrides})


def instruction_splits(tok, tmp_path):
    template = '{"prompt": "{question}", "completion": " {answer}"}'
    write(tmp_path / "train", "template.json", template)
    write_jsonl(tmp_path / "train", "train.jsonl", [{"question": q, "answer": a} for q, a in PAIRS])
    write_jsonl(tmp_path / "val", "val.jsonl", [{"question": q, "answer": a} for q, a in PAIRS])
    channels = Channels(tmp_path / "train", tmp_path / "val")
    hyper = hp(instruction_tuned=True)
    return FORMATS.get("instruction", "test").load(channels, hyper, tok, NoOptions())


# --- rows ----------------------------------------------------------------------------------


def test_instruction_samples_give_the_prompt_to_the_encoder(tok, tmp_path):
    splits = instruction_splits(tok, tmp_path)
    rows = FAMILY.rows(splits.train, hp(), splits.max_length, False)

    for row, (question, answer) in zip(rows, PAIRS, strict=True):
        prompt = tok(question)["input_ids"]
        assert prompt[-1] == tok.eos_token_id  # T5's tokenizer ends every input with </s>
        target = tok(f" {answer}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert row == Seq2SeqRow(input_ids=prompt, decoder_ids=target, labels=target)
        assert len(row) == len(prompt) + len(target)


def test_domain_blocks_are_cut_in_half(tok, tmp_path):
    write(tmp_path / "train", "book.txt", " ".join(q for q, _ in PAIRS) * 3)
    channels = Channels(tmp_path / "train")
    splits = FORMATS.get("domain-adaptation", "test").load(
        channels, hp(max_input_length=9), tok, NoOptions()
    )
    rows = FAMILY.rows(splits.train, hp(), splits.max_length, False)

    for row, sample in zip(rows, splits.train, strict=True):
        block = sample.input_ids
        assert row == Seq2SeqRow(block[:4], block[4:], block[4:])  # 9 tokens: 4 in, 5 out
    row = FAMILY.rows([Sample([5, 6, 7, 8], [5, 6, 7, 8])], hp(), 4, False)[0]
    assert row == Seq2SeqRow([5, 6], [7, 8], [7, 8])


def test_later_no_loss_turns_are_read_by_the_decoder_without_labels():
    # A chat: user turn (no loss), assistant turn, user turn (no loss), assistant turn.
    sample = Sample([1, 2, 3, 4, 5, 6, 7, 8, 9], [I, I, I, 4, 5, I, I, 8, 9])
    (row,) = FAMILY.rows([sample], hp(), 9, False)
    assert row == Seq2SeqRow([1, 2, 3], [4, 5, 6, 7, 8, 9], [4, 5, I, I, 8, 9])


def test_packing_does_not_apply(caplog):
    samples = [Sample([1, 2, 3], [I, 2, 3]), Sample([4, 5], [I, 5])]
    with caplog.at_level(logging.INFO, logger="kubetune_trainer.models.seq2seq"):
        rows = FAMILY.rows(samples, hp(packing=True), 8, True)
    assert len(rows) == 2
    assert "packing does not apply to seq2seq-lm models" in caplog.text


def test_a_blank_row_keeps_its_tokens_and_loses_its_labels():
    row = Seq2SeqRow([1, 2, 3], [4, 5], [4, 5])
    blank = dataclasses.replace(row, labels=[I] * len(row.labels))
    assert blank == Seq2SeqRow([1, 2, 3], [4, 5], [I, I])
    assert FAMILY.count_labels([blank]) == 0
    with pytest.raises(ValueError, match="2 decoder tokens but 5 labels"):
        dataclasses.replace(row, labels=[I] * len(row))


# --- batches -------------------------------------------------------------------------------


def test_collate_pads_both_sides_and_shifts_the_decoder():
    rows = [Seq2SeqRow([5, 6, 7], [8, 9], [8, 9]), Seq2SeqRow([5], [8, 9, 10], [I, 9, 10])]
    batch = FAMILY.collate(rows, 0, CPU)

    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[0, 8, 0], [0, 8, 9]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [[8, 9, I], [I, 9, 10]]
    assert all(t.dtype == torch.long for t in batch.values())
    assert FAMILY.count_labels(rows) == 4  # no shift: every label counts


def test_matches_encoder_decoder_configs_only():
    assert FAMILY.matches(T5Config())
    assert not FAMILY.matches(LlamaConfig())


# --- model ---------------------------------------------------------------------------------


def test_target_modules_default_and_override():
    assert target_modules("t5", hp()) == ["q", "k", "v", "o"]
    assert target_modules("t5", hp(lora_target_modules=["q", "v", "wo"])) == ["q", "v", "wo"]
    with pytest.raises(ModelError, match="model_type 'bart'.*set the lora_target_modules"):
        target_modules("bart", hp())


def test_loss_is_summed_over_labels_and_divided_by_num_items(model_dir, tok, tmp_path):
    model = FAMILY.load(model_dir, hp(), CPU, None, NoOptions())
    splits = instruction_splits(tok, tmp_path)
    batch = FAMILY.collate(FAMILY.rows(splits.train[:3], hp(), 512, False), 0, CPU)
    n = FAMILY.count_labels(FAMILY.rows(splits.train[:3], hp(), 512, False))
    model.eval()
    with torch.no_grad():
        mean = model(**batch).loss  # T5's own: the mean over this batch's labels
        scaled = model(**batch, num_items_in_batch=4 * n).loss  # the step has 4x as many
    assert scaled.item() == pytest.approx(mean.item() / 4, rel=1e-5)


def test_a_few_optimizer_steps_lower_the_loss(model_dir, tok, tmp_path):
    torch.manual_seed(0)
    model = FAMILY.load(model_dir, hp(gradient_checkpointing=True), CPU, None, NoOptions())
    splits = instruction_splits(tok, tmp_path)
    rows = FAMILY.rows(splits.train, hp(), splits.max_length, True)
    batch = FAMILY.collate(rows, tok.pad_token_id, CPU)
    n = FAMILY.count_labels(rows)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen_base = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert trainable and not frozen_base
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    losses = []
    for _ in range(12):
        loss = model(**batch, num_items_in_batch=n).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_export_writes_adapter_and_merged_that_load_back(model_dir, tok, tmp_path):
    model = FAMILY.load(model_dir, hp(), CPU, None, NoOptions())
    with torch.no_grad():  # a trained adapter: B is zero at init, so move it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    batch = FAMILY.collate([Seq2SeqRow([5, 6, 7, 1], [8, 9, 1], [8, 9, 1])], 0, CPU)
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits

    FAMILY.export(model, tok, tmp_path / "staging", hp(merge_weights=True))

    adapter, merged = tmp_path / "staging" / "adapter", tmp_path / "staging" / "merged"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (merged / "tokenizer.json").is_file() and (adapter / "tokenizer.json").is_file()
    base = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    reloaded = PeftModel.from_pretrained(base, adapter).eval()
    folded = AutoModelForSeq2SeqLM.from_pretrained(merged).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trained, atol=1e-4)
        assert torch.allclose(folded(**batch).logits, trained, atol=1e-4)
    assert not any("lora" in key for key in folded.state_dict())


def test_export_without_merge_writes_only_the_adapter(model_dir, tok, tmp_path):
    model = FAMILY.load(model_dir, hp(), CPU, None, NoOptions())
    FAMILY.export(model, tok, tmp_path / "staging", hp(merge_weights=False))
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == ["adapter"]


def test_model_problems_are_model_errors(model_dir, tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        FAMILY.load(tmp_path, hp(), CPU, None, NoOptions())
    with pytest.raises(ModelError, match="int8_quantization needs a CUDA GPU"):
        FAMILY.load(model_dir, hp(int8_quantization=True), CPU, None, NoOptions())
    odd = tmp_path / "odd"
    odd_tokenizer = build_tokenizer(["a b c"], odd, style="t5")
    build_tiny_t5(odd, len(odd_tokenizer), tokenizer=odd_tokenizer, decoder_start_token_id=1)
    with pytest.raises(ModelError, match="decoder_start_token_id 1 is not the pad token 0"):
        FAMILY.load(odd, hp(), CPU, None, NoOptions())
