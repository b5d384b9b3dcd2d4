"""Samples packed into one row do not attend to each other: the loss of a packed row, as the
train step computes it, is the sum of its samples' losses computed alone."""

import random

import torch

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer import steps
from kubetune_trainer.formats.samples import IGNORE_INDEX, Sample
from kubetune_trainer.model import load_tokenizer
from kubetune_trainer.models import MODELS, packed_attention
from kubetune_trainer.packing import one_per_row, pack
from tests.support.training import make_job

CPU = torch.device("cpu")


def label_loss_sum(model, family, rows) -> float:
    """Summed loss of the rows' label tokens, the way steps.train_step calls the model."""
    batch = family.collate(rows, 0, CPU)
    with torch.no_grad():
        return model(**batch, **steps.NO_CACHE, num_items_in_batch=1).loss.item()


def test_a_packed_row_scores_each_sample_as_if_alone(tmp_path):
    root = make_job(tmp_path, samples=20)
    chosen = MODELS.choose("causal-lm", None, "spec.trainer.model")
    family = chosen.part
    torch.manual_seed(0)
    model = family.load(root / "model", Hyperparameters(), CPU, None, chosen.options).eval()
    rng = random.Random(0)
    samples = []
    for length in (9, 14, 6):
        ids = [rng.randrange(3, 60) for _ in range(length)]
        labels = [IGNORE_INDEX] * 3 + ids[3:]  # a prompt, then the completion
        samples.append(Sample(ids, labels))
    (row,) = pack(samples, 64)  # all three in one row, positions restarting per sample
    packed = label_loss_sum(model, family, [row])
    alone = sum(label_loss_sum(model, family, [r]) for r in one_per_row(samples))
    assert abs(packed - alone) < 1e-3 * alone, (packed, alone)


def test_attention_per_sample_matches_sdpa_over_the_masked_row(tmp_path):
    """The same logits and gradients as transformers' SDPA with its block-diagonal mask, for a
    batch of two packed rows (the second ending in padding, a sequence of its own)."""
    root = make_job(tmp_path, samples=20)
    chosen = MODELS.choose("causal-lm", None, "spec.trainer.model")
    torch.manual_seed(0)
    model = chosen.part.load(root / "model", Hyperparameters(), CPU, None, chosen.options)
    model.eval()  # no dropout: both calls see the same weights
    assert model.config._attn_implementation == packed_attention.NAME
    rng = random.Random(1)
    rows = [
        pack([Sample(ids := [rng.randrange(3, 60) for _ in range(n)], ids) for n in lengths], 64)[0]
        for lengths in ((9, 14, 6, 20), (30, 5))
    ]
    batch = chosen.part.collate(rows, 0, CPU)
    found = {}
    for name in (packed_attention.NAME, "sdpa"):
        model.config._attn_implementation = name
        model.zero_grad()
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       **steps.NO_CACHE).logits  # fmt: skip
        logits.square().mean().backward()
        lora = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        found[name] = (logits.detach(), lora)
    ours, theirs = found[packed_attention.NAME], found["sdpa"]
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-4)
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-3)


def test_samples_are_runs_of_positions_rising_by_one():
    assert packed_attention.spans([0, 1, 2, 0, 1, 0, 0, 1, 2, 3]) == [(0, 3), (3, 5), (5, 6),
                                                                     (6, 10)]  # fmt: skip
    assert packed_attention.spans([4, 5, 6]) == [(0, 3)]  # a continuation is one sample
    assert packed_attention.spans([0, 1, 5, 6]) == [(0, 2), (2, 4)]


def test_the_merged_config_names_sdpa_not_ours(tmp_path):
    root = make_job(tmp_path, samples=20)
    chosen = MODELS.choose("causal-lm", None, "spec.trainer.model")
    model = chosen.part.load(root / "model", Hyperparameters(), CPU, None, chosen.options)
    out = tmp_path / "out"
    tokenizer = load_tokenizer(root / "model")
    chosen.part.export(model, tokenizer, out, Hyperparameters(merged_dtype="float32"))
    assert packed_attention.NAME not in (out / "merged" / "config.json").read_text()
    assert model.config._attn_implementation == "sdpa"
