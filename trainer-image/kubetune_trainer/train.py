"""`kubetune-train --config PATH`: one fine-tuning run, read top to bottom.

load config -> download model and data -> tokenize and pack -> build and wrap the model
(DDP, or FSDP2 with enable_fsdp) -> resume from the newest checkpoint -> train (checkpoint every
N steps and at each epoch end, eval each epoch, keep the best) -> export artifacts, MANIFEST.json
last. One process, or one per accelerator under torchrun (RANK, WORLD_SIZE... as PyTorchJob sets).
"""

import argparse
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from transformers import get_scheduler

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig, TrainingMetrics
from kubetune.api.v1alpha1.exits import ExitCode
from kubetune.api.v1alpha1.outputs import METRICS
from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH
from kubetune.storage import NoSpace, StorageError, join_uri, open_store
from kubetune_trainer import checkpoint, distributed
from kubetune_trainer.artifacts import OutputTaken, RetriesExhausted, claim_output, export
from kubetune_trainer.batches import (
    collate,
    count_labels,
    epoch_order,
    micro_batches,
    rank_share,
)
from kubetune_trainer.checkpoint import Checkpoint, TrainState
from kubetune_trainer.data import DataError, load_splits
from kubetune_trainer.launch import record_exit
from kubetune_trainer.model import ModelError, compute_dtype, load_model, load_tokenizer
from kubetune_trainer.outages import Patient
from kubetune_trainer.packing import Row, one_per_row, pack
from kubetune_trainer.preemption import Stopped, stop_signals
from kubetune_trainer.presigned import PresignedStore
from kubetune_trainer.progress import ProgressReporter, record_outcome, starting
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.trainer_status import StatusPusher

log = logging.getLogger("kubetune.train")


class ConfigError(ValueError):
    """The TrainerConfig file is missing or invalid."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runtime = Runtime.from_env()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [rank {runtime.rank}] %(message)s",
    )
    for ours in ("kubetune", "kubetune_trainer"):  # DEBUG: a line per step; libraries stay at INFO
        logging.getLogger(ours).setLevel(runtime.log_level)
    code, message = run(args, runtime)
    record_exit(runtime.exit_dir, runtime.rank, code, message)
    return code


def run(args, runtime: Runtime) -> tuple[ExitCode | int, str]:
    """Train, and say how it ended by the exit-code contract (kubetune.api.v1alpha1.exits) and,
    when it will not be retried as it is, in progress.json (record_outcome)."""
    config = None
    try:
        config = read_config(args.config)
        train(config, runtime)
    except Stopped as stopped:
        log.warning("%s", stopped)
        record_outcome(config, runtime, "stopped", str(stopped), stopped.signum, stopped.step)
        return stopped.exit_code, str(stopped)
    except StorageError as err:
        log.error("%s", err)
        if err.transient:
            return ExitCode.INFRASTRUCTURE, str(err)
        record_outcome(config, runtime, "failed", str(err))
        return ExitCode.USER_ERROR, str(err)
    except (ConfigError, DataError, ModelError, NoSpace, OutputTaken, RetriesExhausted) as err:
        log.error("%s", err)  # the user's to fix: one line, no traceback
        record_outcome(config, runtime, "failed", str(err))
        code = ExitCode.RETRIES_EXHAUSTED if isinstance(err, RetriesExhausted) else None
        return code or ExitCode.USER_ERROR, str(err)
    except (torch.distributed.DistError, ConnectionError, TimeoutError) as err:
        log.exception("lost contact with the other ranks or a service; a new pod resumes")
        return ExitCode.INFRASTRUCTURE, f"{type(err).__name__}: {one_line(err)}"
    except Exception as err:
        log.exception("unexpected error in the trainer")
        message = f"unexpected {type(err).__name__}: {one_line(err)}"
        record_outcome(config, runtime, "failed", message)
        return ExitCode.TRAINER_ERROR, message
    return ExitCode.SUCCEEDED, ""


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:1000]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetune-train", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_PATH, help="TrainerConfig JSON file")
    return parser.parse_args(argv)


def read_config(path: str) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate_json(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the trainer config: {err.strerror}") from None
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{path}: not a valid TrainerConfig: {problems}") from None


def train(config: TrainerConfig, runtime: Runtime) -> TrainingMetrics:
    hp = Hyperparameters.model_validate(config.hyperparameters.model_dump())
    output = Patient(open_store(config.output.uri, runtime.credentials["output"]))
    if claim_output(output, config, count_start=runtime.is_main):
        log.info("%s: artifacts of this job are complete already; nothing to do", config.output.uri)
        if runtime.is_main:  # a run killed between MANIFEST.json and this cleanup left them
            checkpoint.delete_all(output, config.output.uri)
        return TrainingMetrics.model_validate_json(
            output.read_bytes(join_uri(config.output.uri, METRICS))
        )
    if runtime.is_main:
        starting(output, config.output.uri)

    scratch = runtime.scratch / config.job.uid
    data_credentials = runtime.credentials["data"]
    model_store = PresignedStore(runtime.model_urls) if runtime.model_urls else None
    model_dir = download(config.model.source, scratch / "model", runtime.credentials["model"],
                         model_store)  # fmt: skip
    train_dir = download(config.data.train, scratch / "data" / "train", data_credentials)
    val_dir = download(config.data.validation, scratch / "data" / "validation", data_credentials)
    tokenizer = load_tokenizer(model_dir)
    try:
        splits = load_splits(train_dir, val_dir, hp, tokenizer)  # data errors surface here, early
    except DataError as err:
        raise DataError(
            where_stored(str(err), {train_dir: config.data.train, val_dir: config.data.validation})
        ) from None
    rows = pack(splits.train, splits.max_length) if hp.packing else one_per_row(splits.train)
    val_rows = one_per_row(splits.validation)

    with distributed.process_group(runtime), stop_signals() as stop_request:
        torch.manual_seed(hp.seed)  # the same LoRA init on every rank
        model = distributed.wrap(load_model(model_dir, hp, runtime.device), hp, runtime)
        torch.manual_seed(hp.seed + runtime.rank)  # each rank its own dropout
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        # e.g. 1,000 rows / 2 ranks = 500 rows / 4 per batch = 125 micro-batches
        #      / 8 accumulated = 16 optimizer steps per epoch
        rows_per_rank = math.ceil(len(rows) / runtime.world_size)
        micro_batches_per_epoch = math.ceil(rows_per_rank / hp.per_device_train_batch_size)
        steps_per_epoch = math.ceil(micro_batches_per_epoch / hp.gradient_accumulation_steps)
        total_steps = steps_per_epoch * hp.epoch
        scheduler = get_scheduler(
            hp.lr_scheduler_type,
            optimizer,
            num_warmup_steps=int(hp.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        log.info(
            "training: %d rows (%d samples) on %d rank(s) x %d epochs = %d steps; "
            "%d validation samples",
            len(rows),
            len(splits.train),
            runtime.world_size,
            hp.epoch,
            total_steps,
            len(val_rows),
        )
        state = resume(output, config, model, optimizer, scheduler, scratch, runtime)
        endpoint = runtime.trainer_status if runtime.is_main else None
        progress = ProgressReporter(
            output,
            config.output.uri,
            total_steps,
            state.step,
            enabled=runtime.is_main,
            pusher=StatusPusher(endpoint) if endpoint else None,
            epochs=hp.epoch,
            rows=len(rows),
            samples=len(splits.train),
            validation_samples=len(val_rows),
            world_size=runtime.world_size,
        )
        saver = Saver(output, config, model, optimizer, scheduler, scratch, runtime)

        for epoch in range(state.epoch, hp.epoch + 1):
            model.train()
            order = epoch_order(len(rows), hp.seed, epoch)
            batches = micro_batches(
                rank_share(rows, order, runtime.rank, runtime.world_size),
                hp.per_device_train_batch_size,
            )
            steps = [
                batches[s : s + hp.gradient_accumulation_steps]
                for s in range(0, len(batches), hp.gradient_accumulation_steps)
            ]
            for group in steps[state.epoch_step :]:
                started = time.monotonic()
                loss, tokens, padded = train_step(
                    model, group, optimizer, scheduler, trainable, hp, tokenizer, runtime
                )
                seconds = time.monotonic() - started
                state.epoch_step, state.step = state.epoch_step + 1, state.step + 1
                state.epoch_losses.append(loss)
                state.step_losses.append([epoch, state.step, loss])
                progress.step(epoch, state.step, loss, tokens, padded, seconds)
                log.debug("step %d/%d (epoch %d): loss %.4f", state.step, total_steps, epoch, loss)
                stop = distributed.all_sum([float(bool(stop_request))], runtime)[0] > 0
                interval = hp.checkpoint_interval_steps
                if stop or (
                    interval and state.step % interval == 0 and state.epoch_step < len(steps)
                ):
                    saver.save(state)
                if stop:
                    raise Stopped(stop_request.signum or 15, state.step)

            eval_loss = evaluate(model, val_rows, hp, tokenizer, runtime)
            state.history.append(
                {
                    "epoch": epoch,
                    "train_loss": sum(state.epoch_losses) / max(len(state.epoch_losses), 1),
                    "eval_loss": eval_loss,
                    "eval_perplexity": perplexity(eval_loss),
                }
            )
            log.info(
                "epoch %d/%d: train loss %.4f, eval loss %.4f, perplexity %.2f",
                epoch,
                hp.epoch,
                state.history[-1]["train_loss"],
                eval_loss,
                perplexity(eval_loss),
            )
            progress.epoch_done(epoch, state.step, eval_loss)
            if state.best is None or eval_loss < state.best["eval_loss"]:
                state.best = state.history[-1]
                state.best_weights = distributed.trainable_weights(model)
            state.epoch, state.epoch_step, state.epoch_losses = epoch + 1, 0, []
            saver.save(state)

        metrics = TrainingMetrics(
            best_epoch=state.best["epoch"],
            train_loss=state.best["train_loss"],
            eval_loss=state.best["eval_loss"],
            eval_perplexity=state.best["eval_perplexity"],
            # Non-padding tokens of all ranks per second spent in training steps, since the
            # last (re)start: eval and checkpoints excluded.
            tokens_per_second=progress.tokens_per_second(),
            train_tokens=progress.tokens,
            train_seconds=progress.train_seconds,
            padding_fraction=progress.padding_fraction(),
            steps=state.step,
            world_size=runtime.world_size,
            epochs=state.history,
        )
        if runtime.is_main:
            final = export_model(model, hp, model_dir, runtime)
            final.load_state_dict(state.best_weights, strict=False)
            curve = state.step_losses
            export(final, tokenizer, config, hp, metrics, output, scratch / "artifacts", curve)
            progress.finished(state.step, state.best["eval_loss"])
            checkpoint.delete_all(output, config.output.uri)
        distributed.barrier(runtime)  # no rank exits before the artifacts are complete
    return metrics


def download(uri: str | None, dest: Path, credentials: dict[str, str], store=None) -> Path | None:
    """uri's files into dest, with `store` (the model's presigned URLs) or the channel's own."""
    if uri is None:
        return None
    Patient(store or open_store(uri, credentials)).download_dir(uri, dest)
    return dest


def where_stored(message: str, copies: dict[Path | None, str | None]) -> str:
    """Name the user's URIs in a message about the local copies (scratch paths mean nothing
    to them): /scratch/UID/data/train/a.csv -> s3://bucket/train/a.csv."""
    for local, uri in copies.items():
        if local is not None and uri is not None:
            message = message.replace(str(local), uri.rstrip("/"))
    return message


def train_step(model, group, optimizer, scheduler, trainable, hp, tokenizer, runtime):
    """One optimizer step over this rank's micro-batches `group`.

    Returns the step's loss (mean over every label token of all ranks), and the non-padding
    and padded token counts of all ranks.
    """
    inputs = [collate(batch, tokenizer.pad_token_id, runtime.device) for batch in group]
    local = [
        sum(count_labels(batch) for batch in group),
        sum(len(row) for batch in group for row in batch),
        sum(batch["input_ids"].numel() for batch in inputs),
    ]
    labels, tokens, padded = distributed.all_sum(local, runtime)
    step_loss = torch.zeros((), device=runtime.device)
    for i, batch in enumerate(inputs):
        with distributed.no_sync(model, last=i == len(inputs) - 1):
            # loss = this micro-batch's label losses / the step's label count on all ranks;
            # DDP and FSDP average gradients over ranks, so scale back up by world size.
            loss = model(**batch, num_items_in_batch=max(int(labels), 1)).loss
            (loss * runtime.world_size).backward()
        step_loss += loss.detach()
    if hp.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    step_loss = distributed.all_sum([step_loss.item()], runtime)[0]
    return step_loss, int(tokens), int(padded)


@torch.no_grad()
def evaluate(model, rows: list[Row], hp: Hyperparameters, tokenizer, runtime: Runtime) -> float:
    """Mean loss per label token over the whole validation set, shared out over the ranks."""
    model.eval()
    share = rank_share(rows, list(range(len(rows))), runtime.rank, runtime.world_size)
    total, tokens = 0.0, 0
    for batch in micro_batches(share, hp.per_device_eval_batch_size):
        n = count_labels(batch)
        inputs = collate(batch, tokenizer.pad_token_id, runtime.device)
        total += model(**inputs, num_items_in_batch=max(n, 1)).loss.item() * n
        tokens += n
    total, tokens = distributed.all_sum([total, tokens], runtime)
    return total / max(tokens, 1)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: exp of a diverged loss is inf, not a number


def resume(output, config, model, optimizer, scheduler, scratch, runtime) -> TrainState:
    """Load the newest complete checkpoint that every rank can read; a fresh state if none."""
    for uri, manifest in checkpoint.complete(output, config.output.uri):
        saved = checkpoint.load(output, uri, manifest, scratch / "checkpoints")
        readable = distributed.all_sum([float(saved is not None)], runtime)[0]
        if readable < runtime.world_size:
            continue  # the ranks must agree on one checkpoint; try the one before
        distributed.load_trainable_state(model, optimizer, saved.weights, saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        if len(saved.rng) == runtime.world_size:
            checkpoint.set_rng_state(saved.rng[runtime.rank], runtime.device)
        log.info(
            "resuming from %s: epoch %d, step %d done",
            uri,
            saved.state.epoch,
            saved.state.step,
        )
        return saved.state
    return TrainState()


class Saver:
    """Gathers what a checkpoint holds from every rank; rank 0 writes it."""

    def __init__(self, store, config, model, optimizer, scheduler, scratch, runtime):
        self.store, self.config, self.runtime = store, config, runtime
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.staging = scratch / "checkpoint-staging"
        if runtime.is_main:  # what a save killed half-way left holds scratch space for nothing
            shutil.rmtree(self.staging, ignore_errors=True)

    def save(self, state: TrainState) -> None:
        weights, optimizer = distributed.trainable_state(self.model, self.optimizer)
        rng = distributed.all_gather(checkpoint.rng_state(self.runtime.device), self.runtime)
        if self.runtime.is_main:
            saved = Checkpoint(state, weights, optimizer, self.scheduler.state_dict(), rng)
            checkpoint.save(self.store, self.config.output.uri, self.staging, saved)
        distributed.barrier(self.runtime)  # a stopping rank must not exit before the upload


def export_model(model, hp: Hyperparameters, model_dir: Path, runtime: Runtime):
    """The model to export from, on rank 0. Under FSDP its weights are sharded, so rank 0 loads
    the base model afresh, on CPU (one GPU may not hold it beside the sharded one)."""
    if not (hp.enable_fsdp and runtime.world_size > 1):
        return distributed.unwrap(model)
    return load_model(
        model_dir,
        hp.model_copy(update={"gradient_checkpointing": False}),
        torch.device("cpu"),
        dtype=compute_dtype(runtime.device),
    )


if __name__ == "__main__":  # the tokenization pool starts processes with spawn
    sys.exit(main())
