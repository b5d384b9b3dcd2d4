"""`kubetune-train --config PATH`: one fine-tuning run, read top to bottom.

load config -> download model and data -> tokenize -> build model -> pack -> train (eval each
epoch, keep the best) -> export artifacts, MANIFEST.json last.
Single process for now; DDP/FSDP, step checkpoints and resume land next (see the trainer issue).
"""

import argparse
import copy
import json
import logging
import math
import random
import sys
from pathlib import Path

import torch
from transformers import get_scheduler

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig
from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH
from kubetune_trainer.artifacts import OutputTaken, claim_output, export
from kubetune_trainer.data import IGNORE_INDEX, DataError, load_splits
from kubetune_trainer.model import ModelError, load_model, load_tokenizer
from kubetune_trainer.packing import Row, one_per_row, pack
from kubetune_trainer.progress import ProgressReporter
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.storage import StorageError, join_uri, open_store

log = logging.getLogger("kubetune.train")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = TrainerConfig.model_validate_json(Path(args.config).read_text())
        train(config, Runtime.from_env())
    except (DataError, ModelError, OutputTaken, StorageError) as err:
        log.error("%s", err)  # the user's to fix: one line, no traceback
        return 2
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetune-train", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_PATH, help="TrainerConfig JSON file")
    return parser.parse_args(argv)


def train(config: TrainerConfig, runtime: Runtime) -> dict:
    hp = Hyperparameters.model_validate(config.hyperparameters.model_dump())
    output = open_store(config.output.uri)
    if claim_output(output, config):
        log.info("%s: artifacts of this job are complete already; nothing to do", config.output.uri)
        return json.loads(output.read_bytes(join_uri(config.output.uri, "metrics.json")))
    torch.manual_seed(hp.seed)

    scratch = runtime.scratch / config.job.uid
    model_dir = download(config.model.source, scratch / "model")
    train_dir = download(config.data.train, scratch / "data" / "train")
    val_dir = download(config.data.validation, scratch / "data" / "validation")

    tokenizer = load_tokenizer(model_dir)
    splits = load_splits(train_dir, val_dir, hp, tokenizer)
    model = load_model(model_dir, hp, runtime.device)

    rows = pack(splits.train, splits.max_length) if hp.packing else one_per_row(splits.train)
    val_rows = one_per_row(splits.validation)
    micro_batches_per_epoch = math.ceil(len(rows) / hp.per_device_train_batch_size)
    # e.g. 1,000 rows / 4 per batch = 250 micro-batches / 8 accumulated = 32 steps per epoch
    steps_per_epoch = math.ceil(micro_batches_per_epoch / hp.gradient_accumulation_steps)
    total_steps = steps_per_epoch * hp.epoch
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = get_scheduler(
        hp.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(hp.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    log.info(
        "training: %d rows (%d samples) x %d epochs = %d steps; %d validation samples",
        len(rows),
        len(splits.train),
        hp.epoch,
        total_steps,
        len(val_rows),
    )

    progress = ProgressReporter(output, config.output.uri, total_steps, enabled=runtime.is_main)
    history, best = [], None
    step = 0
    for epoch in range(1, hp.epoch + 1):
        model.train()
        order = list(range(len(rows)))
        random.Random(hp.seed + epoch).shuffle(order)
        batches = [
            [rows[i] for i in order[s : s + hp.per_device_train_batch_size]]
            for s in range(0, len(order), hp.per_device_train_batch_size)
        ]
        for start in range(0, len(batches), hp.gradient_accumulation_steps):
            group = batches[start : start + hp.gradient_accumulation_steps]
            # Mean over every label token of the optimizer step, however it is split up.
            step_tokens = sum(count_labels(batch) for batch in group)
            step_loss = 0.0
            for batch in group:
                inputs = collate(batch, tokenizer.pad_token_id, runtime.device)
                loss = model(**inputs, num_items_in_batch=step_tokens).loss
                loss.backward()
                step_loss += loss.item()
            if hp.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.step(epoch, step, step_loss, sum(len(r) for b in group for r in b))

        eval_loss = evaluate(model, val_rows, hp.per_device_eval_batch_size, tokenizer, runtime)
        history.append(
            {
                "epoch": epoch,
                "train_loss": progress.epoch_train_loss(),
                "eval_loss": eval_loss,
                "eval_perplexity": perplexity(eval_loss),
            }
        )
        log.info(
            "epoch %d/%d: train loss %.4f, eval loss %.4f, perplexity %.2f",
            epoch,
            hp.epoch,
            history[-1]["train_loss"],
            eval_loss,
            perplexity(eval_loss),
        )
        progress.epoch_done(epoch, step, eval_loss)
        if best is None or eval_loss < best["eval_loss"]:
            best = {**history[-1], "adapter": lora_state(model)}

    model.load_state_dict(best["adapter"], strict=False)
    metrics = {
        "best_epoch": best["epoch"],
        "train_loss": best["train_loss"],
        "eval_loss": best["eval_loss"],
        "eval_perplexity": best["eval_perplexity"],
        "tokens_per_second": progress.tokens_per_second(),
        "epochs": history,
    }
    export(model, tokenizer, config, hp, metrics, output, scratch / "artifacts")
    progress.finished(step, best["eval_loss"])
    return metrics


def download(uri: str | None, dest: Path) -> Path | None:
    if uri is None:
        return None
    open_store(uri).download_dir(uri, dest)
    return dest


def collate(rows: list[Row], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows padded to the longest; padding is a sequence of its own (positions from 0), so
    the packed-sequence masks keep real tokens from attending to it, and it has no labels."""
    width = max(len(r) for r in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        pad = width - len(row)
        ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE_INDEX] * pad)
        positions.append(row.position_ids + list(range(pad)))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {
        "input_ids": as_tensor(ids),
        "labels": as_tensor(labels),
        "position_ids": as_tensor(positions),
    }


def count_labels(rows: list[Row]) -> int:
    # The loss shifts labels by one, so a row's first label never counts.
    return sum(sum(label != IGNORE_INDEX for label in r.labels[1:]) for r in rows)


@torch.no_grad()
def evaluate(model, rows: list[Row], batch_size: int, tokenizer, runtime: Runtime) -> float:
    """Mean loss per label token over the whole validation set."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        n = count_labels(batch)
        inputs = collate(batch, tokenizer.pad_token_id, runtime.device)
        total += model(**inputs, num_items_in_batch=n).loss.item() * n
        tokens += n
    return total / max(tokens, 1)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: exp of a diverged loss is inf, not a number


def lora_state(model) -> dict[str, torch.Tensor]:
    """A copy of the trainable (LoRA) weights: small, so the best epoch is kept in memory."""
    return {
        name: copy.deepcopy(p.detach()) for name, p in model.named_parameters() if p.requires_grad
    }


if __name__ == "__main__":  # the tokenization pool starts processes with spawn
    sys.exit(main())
