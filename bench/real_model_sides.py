"""The sides of bench/trainer_real_model.py, one per process so that each has its own peak RSS:
`python bench/real_model_sides.py SIDE JOB_DIR` trains as JOB_DIR/settings.json says, saves
the LoRA adapter to JOB_DIR/SIDE/adapter/ and its figures to JOB_DIR/SIDE/result.json.

A side is an entry of SIDES: a name, the dtype it trains in and a function.
"""

import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "trainer-image")]

import torch  # noqa: E402
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig  # noqa: E402
from kubetune_trainer.data import IGNORE_INDEX, load_splits  # noqa: E402
from kubetune_trainer.model import load_model, load_tokenizer  # noqa: E402
from kubetune_trainer.runtime import Runtime  # noqa: E402
from kubetune_trainer.train import train  # noqa: E402


@dataclass
class Result:
    """A side's figures; tokens count real (non-padding) tokens over all epochs."""

    steps: int
    tokens: int
    positions: int  # tokens as run, padding included
    seconds: float
    timed: str  # what `seconds` covers


def hyperparameters(s: dict, precision: str = "fp32") -> Hyperparameters:
    """The recipe every side follows, in the product's own terms."""
    return Hyperparameters(
        precision=precision,
        instruction_tuned=True,
        epoch=s["epochs"],
        learning_rate=s["lr"],
        per_device_train_batch_size=s["rows_per_step"],
        max_input_length=s["row_tokens"],
        lora_r=s["lora_r"],
        lora_alpha=s["lora_alpha"],
        lora_dropout=s["lora_dropout"],
        lora_target_modules=s["lora_targets"],
        seed=s["seed"],
        merge_weights=False,  # export is not measured; skip the merged copy
        checkpoint_interval_steps=0,  # checkpoints at epoch ends only (not timed)
    )


def run_kubetune(job: Path, s: dict, out: Path, precision: str) -> Result:
    """The product as a job runs it, at `precision`; figures from its metrics, the adapter it
    exports (the best epoch's, by its own validation loss)."""
    config = TrainerConfig.model_validate(
        {
            "job": {"name": "bench", "namespace": "local", "uid": "bench-real"},
            "model": {"modelId": "smollm2-135m-instruct", "source": f"file://{s['model']}"},
            "data": {
                "train": f"file://{job}/data/train",
                "validation": f"file://{job}/data/validation",
            },
            "hyperparameters": hyperparameters(s, precision).model_dump(),
            "output": {"uri": f"file://{out}/run"},
        }
    )
    metrics = train(config, Runtime.from_env({"KUBETUNE_SCRATCH": str(out / "scratch")}))
    (out / "run" / "adapter").rename(out / "adapter")
    return Result(
        steps=metrics.steps,
        tokens=metrics.train_tokens,
        positions=round(metrics.train_tokens / (1 - metrics.padding_fraction)),
        seconds=metrics.train_seconds,
        timed="sum of its training steps (collation, forward, backward, optimizer)",
    )


class Counting:
    """Wraps a collator: counts the real and the padded positions it hands out."""

    def __init__(self, collate):
        self.collate, self.real, self.total = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        mask = batch.get("attention_mask")
        self.total += batch["input_ids"].numel()
        self.real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return batch


class Clock(TrainerCallback):
    """From the start of the training loop to its end: no setup, no dataset preparation."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.started


TIMED_LOOP = "Trainer's loop, on_train_begin to on_train_end (data loading included)"


def common_args(s: dict, out: Path, bf16: bool = False) -> dict:
    """TrainingArguments both Trainer-based sides share: the same recipe as the product;
    `bf16`: Trainer's mixed precision (CPU autocast over the float32 model)."""
    return dict(
        output_dir=str(out / "trainer"),
        num_train_epochs=s["epochs"],
        learning_rate=s["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",  # torch.optim.AdamW, as the product uses
        seed=s["seed"],
        use_cpu=True,
        bf16=bf16,  # TRL's SFTConfig defaults to bf16; the fp32 sides say False
        gradient_checkpointing=False,  # as the product (TRL's SFTConfig defaults to on)
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )


def lora_model(s: dict):
    """The product's model loading, so every side starts from the same LoRA weights."""
    torch.manual_seed(s["seed"])  # as train() does before loading
    return load_model(Path(s["model"]), hyperparameters(s), torch.device("cpu"))


def finish(trainer: Trainer, clock: Clock, counting: Counting, out: Path, timed: str) -> Result:
    trainer.model.save_pretrained(out / "adapter")
    return Result(
        steps=trainer.state.global_step,
        tokens=counting.real,
        positions=counting.total,
        seconds=clock.seconds,
        timed=timed,
    )


def run_hf(job: Path, s: dict, out: Path) -> Result:
    """A plain `Trainer` on the product's tokenized samples, each batch padded to its longest."""
    tokenizer = load_tokenizer(Path(s["model"]))
    hp = hyperparameters(s)
    splits = load_splits(job / "data" / "train", job / "data" / "validation", hp, tokenizer)
    dataset = [
        {"input_ids": x.input_ids, "attention_mask": [1] * len(x.input_ids), "labels": x.labels}
        for x in splits.train
    ]
    counting = Counting(
        DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)
    )
    args = TrainingArguments(
        per_device_train_batch_size=s["hf_batch"],
        remove_unused_columns=False,
        **common_args(s, out),
    )
    clock = Clock()
    trainer = Trainer(
        model=lora_model(s),
        args=args,
        train_dataset=dataset,
        data_collator=counting,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return finish(trainer, clock, counting, out, TIMED_LOOP)


def run_trl(job: Path, s: dict, out: Path, bf16: bool = False) -> Result:
    """TRL's SFTTrainer on the same records as prompt/completion text: best-fit packing into
    rows of row_tokens, padding-free, loss on completions only; it tokenizes them itself."""
    from datasets import Dataset, disable_progress_bars
    from trl import SFTConfig, SFTTrainer

    disable_progress_bars()  # its dataset preparation's bars would bury the table

    rows = [json.loads(line) for line in (job / "data" / "train" / "train.jsonl").open()]
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    )
    args = SFTConfig(
        per_device_train_batch_size=s["rows_per_step"],
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        completion_only_loss=True,
        max_length=s["row_tokens"],
        **common_args(s, out, bf16),
    )
    clock = Clock()
    trainer = SFTTrainer(
        model=lora_model(s),
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(Path(s["model"])),
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)
    counting = Counting(trainer.data_collator)  # its own collator: a custom one is refused
    trainer.data_collator = counting
    trainer.train()
    return finish(trainer, clock, counting, out, TIMED_LOOP)


@dataclass(frozen=True)
class Side:
    name: str
    dtype: str
    run: object  # (job_dir, settings, out_dir) -> Result
    what: str


SIDES = {
    side.name: side
    for side in (
        Side(
            "kubetune",
            "fp32",
            partial(run_kubetune, precision="fp32"),
            "the product: train(config, runtime), packed, precision fp32",
        ),
        Side(
            "kubetune-bf16",
            "bf16",
            partial(run_kubetune, precision="bf16"),
            "the product, precision bf16 (frozen base in bf16, LoRA and AdamW in fp32)",
        ),
        Side("hf", "fp32", run_hf, "transformers.Trainer, dynamic padding"),
        Side("trl", "fp32", run_trl, "trl.SFTTrainer, bfd packing, padding-free"),
        Side(
            "trl-bf16",
            "bf16",
            partial(run_trl, bf16=True),
            "trl.SFTTrainer as trl, bf16=True (its default: CPU autocast)",
        ),
    )
}


def profiled(run, args, report: Path) -> Result:
    """`run(*args)` under pyinstrument (the Python call tree: report) and torch.profiler (the
    operators by their own CPU time: report.ops)."""
    from pyinstrument import Profiler
    from torch.profiler import ProfilerActivity, profile

    python = Profiler(interval=0.01)
    with profile(activities=[ProfilerActivity.CPU]) as ops:
        python.start()
        result = run(*args)
        python.stop()
    report.write_text(python.output_text(color=False))
    table = ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    report.with_name(report.name + ".ops").write_text(table)
    return result


def main() -> None:
    name, job = sys.argv[1], Path(sys.argv[2])
    settings = json.loads((job / "settings.json").read_text())
    torch.set_num_threads(settings["threads"])
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    out = job / name
    out.mkdir()
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        result = profiled(SIDES[name].run, (job, settings, out), Path(profile))
    else:
        result = SIDES[name].run(job, settings, out)
    (out / "result.json").write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
