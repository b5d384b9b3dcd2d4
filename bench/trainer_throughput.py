"""CPU throughput of kubetune's training recipe against a plain Hugging Face `Trainer`.

Both sides train the same tiny Llama (2 layers, hidden 256, vocab 32,000) with the same LoRA
on the same synthetic instruction data, one after the other in this process, on the same
CPU threads. Ours is the product itself, `kubetune_trainer.train.train(config, runtime)`, with
packing on; the baseline is `transformers.Trainer` with dynamic padding (`DataCollatorForSeq2Seq`
pads each batch of samples to its longest one).

Reading the output: one table row per side, then `loss_difference=<ours - hf>` (final eval loss
per label token on the same validation samples; about 0 means equal quality) and last
`trainer_speedup_vs_hf_trainer=<ratio>`, ours / HF in non-padding tokens per second of training
steps (setup, tokenization, evaluation and export excluded). The goal is >= 1.5 with equal loss.
Figures are for comparison within one run: other load on the machine moves both.

    .venv/bin/python bench/trainer_throughput.py            # a few minutes on 2 CPU cores
    .venv/bin/python bench/trainer_throughput.py --quick    # smoke run, ~30 s
"""

import argparse
import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig
from kubetune.local.tiny_models import SPECIAL_TOKENS, build_tiny_llama, build_word_tokenizer
from kubetune_trainer.data import IGNORE_INDEX, Sample, Splits, load_splits
from kubetune_trainer.model import load_model, load_tokenizer
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.train import train

VOCAB = 32_000  # Llama's 4 special tokens (ids 0-3), then words "w0".."w31995" (ids 4..31999)
MAX_TOKENS = 1024  # the cap of the length spread, and the tokenizer's (and the rows') limit
MEDIAN_TOKENS, SIGMA = 150, 0.8  # lognormal: mean 150 * e^(0.8^2 / 2) = 207 tokens per sample
# Instructions and responses use 32 words. A frozen random model with rank-8 LoRA learns
# mostly that vocabulary: eval loss falls from ~11.6 to ~7.2 within a few dozen steps.
TOPIC_WORDS = 32
# One template that is only field values: a sample's token count is exactly bos + words + eos.
TEMPLATE = {"prompt": "{instruction} {context}", "completion": " {response}"}


@dataclass
class Result:
    """One side's figures: tokens count real (non-padding) tokens over all epochs."""

    side: str
    samples: int
    steps: int
    tokens: int
    padding_fraction: float
    seconds: float
    eval_loss: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # notices and progress bars would bury the table
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        root = Path(tmp)
        print(
            f"bench: {args.samples} train / {args.val_samples} validation samples, "
            f"{args.epochs} epochs, batch {args.batch_size}, {args.threads} threads; "
            f"load average before {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        write_job(root, args.samples, args.val_samples)
        hp = hyperparameters(args)
        # Tokenized by the product's own code; the baseline trains on exactly these samples.
        tokenizer = load_tokenizer(root / "model")
        splits = load_splits(root / "data" / "train", root / "data" / "validation", hp, tokenizer)
        warm_up(root / "model", hp)
        # HF first, ours second, after an untimed warm-up, so neither side pays the process's
        # first-call costs (allocator growth, kernel selection). Ours does its own setup
        # (download, tokenization) inside train(); only its training steps are timed.
        hf = run_hf(root, hp, tokenizer, splits)
        ours = run_ours(root, hp, splits)
    report([hf, ours])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=400, help="training samples")
    parser.add_argument("--val-samples", type=int, default=40, help="validation samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="per-device train batch")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.val_samples, args.epochs = 24, 4, 1
    return args


# --- the job: tokenizer, model, data -----------------------------------------------------


def build_model(path: Path) -> None:
    """The tokenizer (one token per word, so a record's token count is exact) and random
    weights, the same on every run. Parameters: 2 x (4 x 256^2 attention + 3 x 256 x 688 MLP)
    = 1.6 M in the layers, 2 x 32,000 x 256 = 16.4 M in embeddings + head."""
    tokenizer = build_word_tokenizer(path, vocab_size=VOCAB, model_max_length=MAX_TOKENS)
    build_tiny_llama(
        path,
        VOCAB,
        tokenizer=tokenizer,
        hidden_size=256,
        intermediate_size=688,
        num_key_value_heads=4,
        max_position_embeddings=MAX_TOKENS,
        # Wider than Llama's 0.02: the frozen random head then spans logits of about +-25
        # (0.1 x 16 x 16), so LoRA can make confident predictions, as over a pretrained head.
        initializer_range=0.1,
    )


def records(n: int, seed: int) -> list[dict]:
    """Dolly-style records whose total length (bos + words + eos) is lognormal.

    The response repeats the instruction's words (TOPIC_WORDS of them), so there is
    something to learn; the context is noise from the whole vocabulary, in the prompt, so it
    carries no loss. Half the records have one.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = min(MAX_TOKENS, max(8, round(rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA))))
        words = total - 2  # bos and eos
        n_instruction = max(2, words // 5)
        n_context = words * 3 // 10 if rng.random() < 0.5 else 0
        n_response = words - n_instruction - n_context
        instruction = [f"w{rng.randrange(TOPIC_WORDS)}" for _ in range(n_instruction)]
        context = [f"w{rng.randrange(VOCAB - len(SPECIAL_TOKENS))}" for _ in range(n_context)]
        response = [instruction[i % n_instruction] for i in range(n_response)]
        out.append(
            {
                "instruction": " ".join(instruction),
                "context": " ".join(context),
                "response": " ".join(response),
            }
        )
    return out


def write_job(root: Path, samples: int, val_samples: int) -> None:
    """model/ (with its tokenizer), data/train/ (+ template.json), data/validation/."""
    build_model(root / "model")
    for channel, n, seed in (("train", samples, 1), ("validation", val_samples, 2)):
        folder = root / "data" / channel
        folder.mkdir(parents=True)
        lines = (json.dumps(r) + "\n" for r in records(n, seed))
        (folder / f"{channel}.jsonl").write_text("".join(lines))
    (root / "data" / "train" / "template.json").write_text(json.dumps(TEMPLATE))


def hyperparameters(args: argparse.Namespace) -> Hyperparameters:
    return Hyperparameters(
        instruction_tuned=True,
        epoch=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        max_input_length=MAX_TOKENS,
        lora_r=8,
        merge_weights=False,  # export time is not measured; skip the merged copy
        checkpoint_interval_steps=0,  # checkpoints at epoch ends only (not timed either)
    )


def config_for(root: Path, hp: Hyperparameters) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {
            "job": {"name": "bench", "namespace": "local", "uid": "bench-1"},
            "model": {"modelId": "tiny-llama-32k", "source": f"file://{root}/model"},
            "data": {
                "train": f"file://{root}/data/train",
                "validation": f"file://{root}/data/validation",
            },
            "hyperparameters": hp.model_dump(),
            "output": {"uri": f"file://{root}/out"},
        }
    )


# --- the two sides -----------------------------------------------------------------------


def warm_up(model_dir: Path, hp: Hyperparameters) -> None:
    """Two untimed forward/backward passes at the shapes both sides will use."""
    model = load_model(model_dir, hp, torch.device("cpu"))
    for width in (MAX_TOKENS, 2 * MEDIAN_TOKENS):
        ids = torch.randint(len(SPECIAL_TOKENS), VOCAB, (hp.per_device_train_batch_size, width))
        model(input_ids=ids, labels=ids).loss.backward()


def run_ours(root: Path, hp: Hyperparameters, splits: Splits) -> Result:
    """The product's recipe as a job runs it; the figures are its own metrics."""
    runtime = Runtime.from_env({"KUBETUNE_SCRATCH": str(root / "scratch")})
    metrics = train(config_for(root, hp), runtime)
    return Result(
        side="kubetune",
        samples=len(splits.train) * hp.epoch,  # report() checks the real tokens agree
        steps=metrics.steps,
        tokens=metrics.train_tokens,
        padding_fraction=metrics.padding_fraction,
        seconds=metrics.train_seconds,
        eval_loss=metrics.epochs[-1].eval_loss,
    )


class CountingCollator:
    """DataCollatorForSeq2Seq that also counts the real and padded tokens it hands out."""

    def __init__(self, tokenizer):
        self.collate = DataCollatorForSeq2Seq(
            tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX
        )
        self.real = self.total = 0

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        self.real += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


def run_hf(root: Path, hp: Hyperparameters, tokenizer, splits: Splits) -> Result:
    """The baseline: the product's tokenized samples and LoRA model, trained by `Trainer`."""
    torch.manual_seed(hp.seed)  # as train() does before load_model: the same LoRA init
    model = load_model(root / "model", hp, torch.device("cpu"))
    dataset = [
        {"input_ids": s.input_ids, "attention_mask": [1] * len(s.input_ids), "labels": s.labels}
        for s in splits.train
    ]
    collator = CountingCollator(tokenizer)
    args = TrainingArguments(
        output_dir=str(root / "hf"),
        per_device_train_batch_size=hp.per_device_train_batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        num_train_epochs=hp.epoch,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type,
        # A float below 1 is a ratio of the total steps (HF rounds up, ours down).
        warmup_steps=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        optim="adamw_torch",  # torch.optim.AdamW, as ours uses
        seed=hp.seed,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # it prints the final train metrics dict
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return Result(
        side="hf-trainer",
        samples=len(dataset) * hp.epoch,
        steps=trainer.state.global_step,
        tokens=collator.real,
        padding_fraction=1 - collator.real / collator.total,
        seconds=seconds,
        eval_loss=evaluate(model, splits.validation),
    )


@torch.no_grad()
def evaluate(model, samples: list[Sample]) -> float:
    """Mean loss per label token over all samples, one sample at a time (no padding): what
    train() reports as eval_loss."""
    model.eval()
    total, tokens = 0.0, 0
    for sample in samples:
        n = sum(label != IGNORE_INDEX for label in sample.labels[1:])  # labels shift by one
        ids = torch.tensor([sample.input_ids])
        loss = model(input_ids=ids, labels=torch.tensor([sample.labels])).loss
        total += loss.item() * n
        tokens += n
    return total / tokens


# --- output ------------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    header = (
        f"{'side':<11} {'samples':>7} {'steps':>5} {'tokens':>9} {'padding':>7} "
        f"{'train s':>8} {'tokens/s':>9} {'eval loss':>9}"
    )
    print(header)
    for r in results:
        print(
            f"{r.side:<11} {r.samples:>7} {r.steps:>5} {r.tokens:>9,} {r.padding_fraction:>7.1%} "
            f"{r.seconds:>8.1f} {r.tokens_per_second:>9,.0f} {r.eval_loss:>9.4f}"
        )
    hf, ours = results
    if ours.tokens != hf.tokens:  # both train on every sample once per epoch
        print(f"warning: real tokens differ: ours {ours.tokens:,}, hf {hf.tokens:,}")
    print(f"loss_difference={ours.eval_loss - hf.eval_loss:+.4f}")
    print(f"trainer_speedup_vs_hf_trainer={ours.tokens_per_second / hf.tokens_per_second:.2f}")


if __name__ == "__main__":
    main()
