"""One optimizer step and one evaluation pass: the arithmetic of the loss over ranks."""

import math

import torch

from kubetune_trainer import distributed
from kubetune_trainer.batches import micro_batches, rank_share

# No KV cache in training and evaluation: with one (the config's use_cache, on by default),
# transformers does not build the packed-sequence mask from position_ids, and the samples
# packed in a row would attend to each other.
NO_CACHE = {"use_cache": False}


def train_step(recipe, group: list[list]) -> tuple[float, int, int]:
    """One optimizer step over this rank's micro-batches `group`.

    Returns the step's loss (mean over every label token of all ranks), and the non-padding
    and padded token counts of all ranks.
    """
    family, runtime, hp = recipe.family.part, recipe.runtime, recipe.hp
    pad_id = recipe.tokenizer.pad_token_id
    inputs = [family.collate(batch, pad_id, runtime.device) for batch in group]
    local = [
        sum(family.count_labels(batch) for batch in group),
        sum(len(row) for batch in group for row in batch),
        sum(padded_size(batch) for batch in inputs),
    ]
    labels, tokens, padded = distributed.all_sum(local, runtime)
    step_loss = torch.zeros((), device=runtime.device)
    for i, batch in enumerate(inputs):
        with recipe.strategy.part.no_sync(recipe.model, i == len(inputs) - 1):
            # loss = this micro-batch's label losses / the step's label count on all ranks;
            # DDP and FSDP average gradients over ranks, so scale back up by world size.
            with recipe.precision.forward(recipe.model, runtime.device):
                items = max(int(labels), 1)
                loss = recipe.model(**batch, **NO_CACHE, num_items_in_batch=items).loss
            (loss * runtime.world_size).backward()
        step_loss += loss.detach()
    if hp.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(recipe.trainable, hp.max_grad_norm)
    recipe.optimizer.step()
    recipe.scheduler.step()
    recipe.optimizer.zero_grad(set_to_none=True)
    step_loss = distributed.all_sum([step_loss.item()], runtime)[0]
    return step_loss, int(tokens), int(padded)


def padded_size(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of the batch as run, padding included: the encoder's and, for seq2seq models,
    the decoder's."""
    decoder = batch.get("decoder_input_ids")
    return batch["input_ids"].numel() + (decoder.numel() if decoder is not None else 0)


@torch.no_grad()
def evaluate(recipe, rows: list) -> float:
    """Mean loss per label token over all `rows` (the validation or test set), shared out
    over the ranks. Collective: every rank calls it with the same rows."""
    family, runtime = recipe.family.part, recipe.runtime
    recipe.model.eval()
    share = rank_share(rows, list(range(len(rows))), runtime.rank, runtime.world_size)
    total, tokens = 0.0, 0
    for batch in micro_batches(share, recipe.hp.per_device_eval_batch_size):
        n = family.count_labels(batch)
        inputs = family.collate(batch, recipe.tokenizer.pad_token_id, runtime.device)
        with recipe.precision.forward(recipe.model, runtime.device):
            loss = recipe.model(**inputs, **NO_CACHE, num_items_in_batch=max(n, 1)).loss
        total += loss.item() * n
        tokens += n
    total, tokens = distributed.all_sum([total, tokens], runtime)
    recipe.model.train()
    return total / max(tokens, 1)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: exp of a diverged loss is inf, not a number
