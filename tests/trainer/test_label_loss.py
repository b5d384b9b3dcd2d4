"""The causal LM loss over label positions only: the same loss and gradients as transformers'
loss over every position, the head run on the label tokens alone, generation untouched."""

import torch

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer import model as causal_model
from kubetune_trainer.models.label_loss import LabelPositionsLoss
from tests.support.training import make_job


def batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 50, (3, 16))
    labels = ids.clone()
    labels[:, :6] = -100  # a prompt in every row
    labels[1, 10:] = -100  # and padding in one
    positions = torch.arange(16).repeat(3, 1)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def loss_and_grads(model, inputs, items: int):
    out = model(**inputs, num_items_in_batch=items)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    return out, grads


def test_the_same_loss_and_gradients_with_logits_only_at_labels(tmp_path):
    root = make_job(tmp_path, samples=20)
    torch.manual_seed(0)
    model = causal_model.load_model(root / "model", Hyperparameters(), torch.device("cpu"))
    model.eval()  # no LoRA dropout: both passes see the same function
    for p in model.parameters():  # LoRA B starts at zero: give every gradient a value
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    inputs = batch()
    labelled = int((inputs["labels"][:, 1:] != -100).sum())  # 3 x 10 - 6 = 24
    reference, expected = loss_and_grads(model, inputs, 40)
    LabelPositionsLoss(model)
    out, grads = loss_and_grads(model, inputs, 40)
    torch.testing.assert_close(out.loss, reference.loss)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert any(g.abs().sum() > 0 for g in grads)
    assert labelled == 24 and out.logits.shape == (24, reference.logits.shape[-1])
    # without num_items_in_batch: the mean over label tokens, as transformers gives
    mean = model(**inputs).loss
    torch.testing.assert_close(mean, reference.loss * 40 / labelled)
    # generation passes no labels: every position's logits, as before
    assert model(input_ids=inputs["input_ids"]).logits.shape == reference.logits.shape
