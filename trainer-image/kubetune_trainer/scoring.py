"""The test channel, scored once after training with the best epoch's weights: the loss per
label token on every rank (shared out and summed as validation is), and greedy answers to the
first few test samples on the main rank, for samples.jsonl.

A sample's prompt is its tokens before the first label, its reference the run of label tokens
that follows (a chat's first assistant turn). A sample that is all labels (a domain-adaptation
block) is cut in half, as the seq2seq family does for training: the first half prompts, the
second half is the reference.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from kubetune.api.v1alpha1 import SampleAnswer
from kubetune.api.v1alpha1.outputs import SAMPLES
from kubetune_trainer import distributed
from kubetune_trainer.formats.samples import IGNORE_INDEX, Sample
from kubetune_trainer.steps import evaluate, perplexity

log = logging.getLogger(__name__)

ANSWERED = 5  # test samples answered in samples.jsonl: the first ones, in file order
REFERENCE_TOKENS = 128  # a longer reference is cut to this: it bounds what generation costs
MARGIN = 8  # tokens an answer may run past its reference's length; it stops at EOS before


@dataclass(frozen=True)
class TestScores:
    loss: float  # per label token, all ranks
    perplexity: float
    samples: int


def score(recipe) -> TestScores | None:
    """The test loss with the best epoch's weights, loaded into the trained model on every
    rank first; None without a test channel. Collective: every rank calls it."""
    if recipe.test_samples is None:
        return None
    distributed.load_trainable_weights(recipe.model, recipe.state.best_weights, recipe.runtime)
    loss = evaluate(recipe, recipe.test_rows)
    log.info(
        "test: loss %.4f, perplexity %.2f over %d samples (best epoch %d's weights)",
        loss, perplexity(loss), len(recipe.test_samples), recipe.state.best["epoch"],
    )  # fmt: skip
    return TestScores(loss, perplexity(loss), len(recipe.test_samples))


def prompt_and_reference(sample: Sample) -> tuple[list[int], list[int]]:
    """(prompt, reference) token ids of a sample, by the rule above; either may be empty (a
    sample without labels, a one-token block)."""
    input_ids, labels = sample
    start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    if start == 0:
        start = len(input_ids) // 2
    end = start
    while end < len(labels) and labels[end] != IGNORE_INDEX:
        end += 1
    return list(input_ids[:start]), list(input_ids[start:end][:REFERENCE_TOKENS])


@torch.no_grad()
def answers(recipe, model) -> list[SampleAnswer]:
    """Greedy answers of `model` (the best epoch's weights, before export merges them) to
    the first ANSWERED test samples that have a prompt and a reference; main rank only."""
    generate, tokenizer = recipe.family.part.generate, recipe.tokenizer
    if generate is None:
        log.warning("model family %s generates no text: no sample answers", recipe.family.part.name)
        return []
    model.eval()
    found = []
    for index, sample in enumerate(recipe.test_samples):
        if len(found) == ANSWERED:
            break
        prompt, reference = prompt_and_reference(sample)
        if not prompt or not reference:
            continue
        answer = generate(model, prompt, len(reference) + MARGIN, tokenizer)
        text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        found.append(
            SampleAnswer(
                index=index, prompt=text(prompt), reference=text(reference), answer=text(answer)
            )
        )
    return found


def write_answers(folder: Path, found: list[SampleAnswer]) -> None:
    (folder / SAMPLES).write_text("".join(a.model_dump_json() + "\n" for a in found))
