"""Samples packed into one row do not attend to each other: the loss of a packed row, as the
train step computes it, is the sum of its samples' losses computed alone."""

import random

import torch

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer import steps
from kubetune_trainer.formats.samples import IGNORE_INDEX, Sample
from kubetune_trainer.models import MODELS
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
