"""The fine-tuning recipe, top to bottom: `setup(config, runtime, parts) -> Recipe`,
`fit(recipe)`, `export(recipe) -> metrics`.

setup: claim the output -> download model and data -> samples (data format) -> rows (model
family) -> join the process group -> load and wrap the model (strategy) -> optimizer and
schedule -> resume -> build the callbacks. fit: epochs of optimizer steps, an evaluation at
each epoch end; the callbacks see every step and evaluation and ask for checkpoints and stops.
export: the best epoch's weights scored on the test channel (loss on every rank, sample
answers on the main one), then exported by the model family beside metrics and the
callbacks' files, MANIFEST.json last.
"""

import logging
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, get_scheduler

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig, TrainingMetrics
from kubetune.api.v1alpha1.outputs import METRICS, PROMPT
from kubetune.storage import join_uri, open_store
from kubetune_trainer import (
    checkpoint,
    distributed,
    inputs,
    model_files,
    precision,
    resume,
    scoring,
    scratch,
)
from kubetune_trainer.artifacts import claim_output
from kubetune_trainer.artifacts import export as write_artifacts
from kubetune_trainer.batches import epoch_order, micro_batches, rank_share
from kubetune_trainer.callbacks import (
    CheckpointEvent,
    Control,
    EndEvent,
    EvalEvent,
    StepEvent,
    walk,
)
from kubetune_trainer.checkpoint import TrainState
from kubetune_trainer.model import load_tokenizer
from kubetune_trainer.models import choose as choose_family
from kubetune_trainer.outages import Patient
from kubetune_trainer.parts import Parts
from kubetune_trainer.preemption import Stopped, stop_signals
from kubetune_trainer.progress import starting
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.scratch import tensor_bytes
from kubetune_trainer.steps import evaluate, perplexity, train_step

log = logging.getLogger("kubetune.train")


@dataclass
class Recipe:
    """One run's parts and state; the stages below fill it in order."""

    config: TrainerConfig
    runtime: Runtime
    hp: Hyperparameters
    parts: Parts
    output: Any  # the output channel's store
    scratch: Path  # this job's local folder
    stack: ExitStack = field(default_factory=ExitStack)
    finished: TrainingMetrics | None = None  # a run whose artifacts were complete already
    model_dir: Path | None = None
    tokenizer: Any = None
    family: Any = None  # Chosen[ModelFamily]
    strategy: Any = None  # Chosen[Strategy]
    precision: Any = None  # precision.Precision, resolved once before the model loads
    rows: list = field(default_factory=list)
    val_rows: list = field(default_factory=list)
    test_samples: list | None = None  # the test channel's, as the data format made them
    test_rows: list | None = None
    model: Any = None
    trainable: list = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    samples: int = 0  # training samples before packing
    prompt: Any = None  # PromptFormat of the data, written as prompt.json
    steps_per_epoch: int = 0
    total_steps: int = 0
    state: TrainState = field(default_factory=TrainState)
    stop_request: Any = None
    callbacks_by_name: dict[str, Any] = field(default_factory=dict)
    progress: Any = None  # the progress callback's reporter
    stopped_early: str | None = None

    @property
    def callbacks(self) -> list:
        return list(self.callbacks_by_name.values())

    def __enter__(self) -> "Recipe":
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()


def setup(config: TrainerConfig, runtime: Runtime, parts: Parts) -> Recipe:
    hp = Hyperparameters.model_validate(config.hyperparameters.model_dump())
    output = Patient(open_store(config.output.uri, runtime.credentials["output"]))
    recipe = Recipe(config, runtime, hp, parts, output, runtime.scratch / config.job.uid)
    if claim_output(output, config, count_start=runtime.is_main):
        log.info("%s: artifacts of this job are complete already; nothing to do", config.output.uri)
        if runtime.is_main:  # a run killed between MANIFEST.json and this cleanup left them
            checkpoint.delete_all(output, config.output.uri)
        scratch.remove_job_folder(recipe.scratch, runtime)  # and this node's copies
        metrics = output.read_bytes(join_uri(config.output.uri, METRICS))
        recipe.finished = TrainingMetrics.model_validate_json(metrics)
        return recipe
    if runtime.is_main:
        starting(output, config.output.uri)

    recipe.model_dir = inputs.download_model(config, runtime, recipe.scratch)
    channels = inputs.download_data(config, runtime, recipe.scratch)
    recipe.tokenizer = load_tokenizer(recipe.model_dir)
    base_config = AutoConfig.from_pretrained(recipe.model_dir)
    recipe.family = parts.model or choose_family(None, None, base_config)
    splits = inputs.load_data(parts.data_format, channels, config, hp, recipe.tokenizer)
    recipe.rows = recipe.family.part.rows(splits.train, hp, splits.max_length, hp.packing)
    recipe.val_rows = recipe.family.part.rows(splits.validation, hp, splits.max_length, False)
    if splits.test is not None:
        recipe.test_samples = splits.test
        recipe.test_rows = recipe.family.part.rows(splits.test, hp, splits.max_length, False)

    recipe.stack.enter_context(distributed.process_group(runtime))
    recipe.stop_request = recipe.stack.enter_context(stop_signals())
    recipe.strategy = parts.strategy
    tokens = hp.per_device_train_batch_size * splits.max_length
    recipe.precision = precision.resolve(hp.precision, runtime, base_config, tokens)
    torch.manual_seed(hp.seed)  # the same LoRA init on every rank
    base = recipe.family.part.load(
        recipe.model_dir, hp, runtime.device, recipe.precision.dtype, recipe.family.options
    )
    recipe.model = recipe.strategy.part.wrap(base, hp, runtime, recipe.strategy.options)
    torch.manual_seed(hp.seed + runtime.rank)  # each rank its own dropout
    schedule(recipe)
    recipe.samples = len(splits.train)
    recipe.prompt = splits.prompt
    tested = "" if splits.test is None else f"; {len(splits.test)} test samples, scored at the end"
    log.info(
        "training: %d rows (%d samples) on %d rank(s) x %d epochs = %d steps; "
        "%d validation samples%s",
        len(recipe.rows), recipe.samples, runtime.world_size, hp.epoch, recipe.total_steps,
        len(recipe.val_rows),
        tested,
    )  # fmt: skip
    recipe.state = resume.resume(recipe)
    for chosen in parts.callbacks:
        callback = chosen.part.build(chosen.options, recipe)
        recipe.callbacks_by_name[chosen.part.name] = callback
        saved = recipe.state.callbacks.get(chosen.part.name)
        if saved is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(saved)
    return recipe


def schedule(recipe: Recipe) -> None:
    """AdamW over the trainable (LoRA) weights and the learning-rate schedule."""
    hp, runtime = recipe.hp, recipe.runtime
    recipe.trainable = [p for p in recipe.model.parameters() if p.requires_grad]
    recipe.optimizer = torch.optim.AdamW(
        recipe.trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay
    )
    # e.g. 1,000 rows / 2 ranks = 500 rows / 4 per batch = 125 micro-batches
    #      / 8 accumulated = 16 optimizer steps per epoch
    rows_per_rank = math.ceil(len(recipe.rows) / runtime.world_size)
    micro_batches_per_epoch = math.ceil(rows_per_rank / hp.per_device_train_batch_size)
    recipe.steps_per_epoch = math.ceil(micro_batches_per_epoch / hp.gradient_accumulation_steps)
    recipe.total_steps = recipe.steps_per_epoch * hp.epoch
    recipe.scheduler = get_scheduler(
        hp.lr_scheduler_type,
        recipe.optimizer,
        num_warmup_steps=int(hp.warmup_ratio * recipe.total_steps),
        num_training_steps=recipe.total_steps,
    )


def fit(recipe: Recipe) -> None:
    hp, runtime, state = recipe.hp, recipe.runtime, recipe.state
    while state.epoch <= hp.epoch and recipe.stopped_early is None:
        epoch = state.epoch
        recipe.model.train()
        order = epoch_order(len(recipe.rows), hp.seed, epoch)
        share = rank_share(recipe.rows, order, runtime.rank, runtime.world_size)
        batches = micro_batches(share, hp.per_device_train_batch_size)
        accumulate = hp.gradient_accumulation_steps
        steps = [batches[s : s + accumulate] for s in range(0, len(batches), accumulate)]
        for group in steps[state.epoch_step :]:
            started = time.monotonic()
            loss, tokens, padded = train_step(recipe, group)
            state.epoch_step, state.step = state.epoch_step + 1, state.step + 1
            state.epoch_losses.append(loss)
            event = StepEvent(
                epoch=epoch,
                step=state.step,
                epoch_step=state.epoch_step,
                steps_per_epoch=len(steps),
                total_steps=recipe.total_steps,
                loss=loss,
                learning_rate=recipe.scheduler.get_last_lr()[0],
                tokens=tokens,
                padded_tokens=padded,
                seconds=time.monotonic() - started,
            )
            control = Control()
            walk(recipe.callbacks, "on_step", recipe, event, control)
            act(recipe, agreed(control, runtime), "interval")
            if recipe.stopped_early is not None:
                break  # the partial epoch is still evaluated: its weights may be the best

        eval_loss = evaluate(recipe, recipe.val_rows)
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": sum(state.epoch_losses) / max(len(state.epoch_losses), 1),
                "eval_loss": eval_loss,
                "eval_perplexity": perplexity(eval_loss),
            }
        )
        best = state.best is None or eval_loss < state.best["eval_loss"]
        if best:
            state.best = state.history[-1]
            state.best_weights = distributed.trainable_weights(recipe.model)
        state.epoch, state.epoch_step, state.epoch_losses = epoch + 1, 0, []
        event = EvalEvent(
            epoch=epoch,
            step=state.step,
            train_loss=state.history[-1]["train_loss"],
            eval_loss=eval_loss,
            eval_perplexity=perplexity(eval_loss),
            best=best,
        )
        control = Control()
        walk(recipe.callbacks, "on_eval", recipe, event, control)
        act(recipe, agreed(control, runtime), "epoch")


def agreed(control: Control, runtime: Runtime) -> Control:
    """What every rank does: a save or stop asked on any rank, on all of them."""
    signalled = control.signal is not None
    save, stop, signals, signum = distributed.all_sum(
        [control.save, control.stop is not None, signalled, control.signal or 0], runtime
    )
    if stop and control.stop is None:
        control.stop = "stopped on another rank"
    control.save = save > 0
    # torchrun forwards the same signal to every rank: the mean is that signal.
    control.signal = round(signum / signals) if signals else None
    return control


def act(recipe: Recipe, control: Control, reason: str) -> None:
    if control.save:
        uri = resume.save(recipe)
        event = checkpoint_event(recipe, uri, "stop" if control.stop else reason)
        walk(recipe.callbacks, "on_checkpoint", recipe, event)
    if control.signal is not None:
        raise Stopped(control.signal, recipe.state.step)
    if control.stop is not None:
        log.info("%s", control.stop)
        recipe.stopped_early = recipe.stopped_early or control.stop


def checkpoint_event(recipe: Recipe, uri: str | None, reason: str) -> CheckpointEvent:
    state = recipe.state
    return CheckpointEvent(step=state.step, epoch=state.epoch, uri=uri or "", reason=reason)


def export(recipe: Recipe) -> TrainingMetrics:
    """The best epoch's model and the run's figures under the output URI; MANIFEST.json last."""
    state, runtime, hp, progress = recipe.state, recipe.runtime, recipe.hp, recipe.progress
    test = scoring.score(recipe)
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
        precision=recipe.precision.name,
        stopped_early=recipe.stopped_early,
        test_loss=test.loss if test else None,
        test_perplexity=test.perplexity if test else None,
        test_samples=test.samples if test else None,
    )
    staging = recipe.scratch / "artifacts" if runtime.is_main else None
    if runtime.is_main:
        final = model_to_export(recipe)
        final.load_state_dict(state.best_weights, strict=False)
        answers = scoring.answers(recipe, final) if test else None  # before the merge below
        model_files.name_base_model(final, recipe.config.model.model_id)
        # The family sees merged_dtype resolved: bfloat16, float16 or float32, never auto.
        base_config = AutoConfig.from_pretrained(recipe.model_dir)
        dtype = model_files.merged_dtype(hp.merged_dtype, base_config)
        export_hp = hp.model_copy(update={"merged_dtype": dtype})

        def write(folder: Path) -> None:
            if answers is not None:
                scoring.write_answers(folder, answers)
            walk(recipe.callbacks, "on_end", recipe, EndEvent(metrics, folder))
            if recipe.prompt is not None:
                (folder / PROMPT).write_text(recipe.prompt.model_dump_json(indent=2))
            recipe.family.part.export(final, recipe.tokenizer, folder, export_hp)  # merges

        needed = model_bytes(final, export_hp)
        write_artifacts(recipe.config, metrics, recipe.output, staging, needed, write)
        progress.finished(state.step, state.best["eval_loss"])
        checkpoint.delete_all(recipe.output, recipe.config.output.uri)
    else:
        walk(recipe.callbacks, "on_end", recipe, EndEvent(metrics, None))
    distributed.barrier(runtime)  # no rank exits before the artifacts are complete
    scratch.remove_job_folder(recipe.scratch, runtime)  # after the barrier: no rank reads it
    return metrics


def model_bytes(model, hp: Hyperparameters) -> int:
    """The adapter, and with merge_weights the whole model in merged_dtype (resolved): a
    lower bound on what the model family's export writes."""
    adapter = tensor_bytes([p for p in model.parameters() if p.requires_grad])
    if not hp.merge_weights:
        return adapter
    weights = sum(p.numel() for p in model.parameters())
    return adapter + weights * model_files.DTYPES[hp.merged_dtype].itemsize


def model_to_export(recipe: Recipe):
    """The model to export from, on rank 0. Where the strategy shards weights, rank 0 loads
    the base model afresh, on CPU (one GPU may not hold it beside the sharded one)."""
    strategy, runtime = recipe.strategy.part, recipe.runtime
    if not (strategy.shards_weights and runtime.world_size > 1):
        return strategy.unwrap(recipe.model)
    hp = recipe.hp.model_copy(update={"gradient_checkpointing": False})
    device, dtype = torch.device("cpu"), recipe.precision.dtype
    return recipe.family.part.load(recipe.model_dir, hp, device, dtype, recipe.family.options)
