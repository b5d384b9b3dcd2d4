"""The causal LM loss over label positions only (models/label_loss.py) against transformers'
loss over every position, on the quick start's real model and data: SmolLM2-135M-Instruct
(49,152-word vocabulary) instruction-tuned on the ops desk through its chat template, the rows
packed as the trainer packs them. Both sides run the same training steps in one process,
alternating, so machine load hits both alike.

    .venv/bin/python bench/label_loss.py [--steps 12] [--threads 2]

Prints per side: seconds per step, non-padding tokens/s, the logits one micro-batch holds,
and the loss of the first step (the two must agree to rounding); last lines
`label_loss_speedup=` and `label_loss_logits_ratio=`.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "trainer-image")]

from kubetune.api.v1alpha1 import Hyperparameters  # noqa: E402
from kubetune.local import smollm2  # noqa: E402
from kubetune_trainer import batches  # noqa: E402
from kubetune_trainer import model as causal_model  # noqa: E402
from kubetune_trainer.formats import FORMATS, Channels  # noqa: E402
from kubetune_trainer.models.label_loss import LabelPositionsLoss  # noqa: E402
from kubetune_trainer.packing import pack  # noqa: E402

DATA = REPO / "examples" / "quickstart" / "data" / "ops-desk"


def rows_and_model(hp: Hyperparameters):
    folder = smollm2.ensure(smollm2.default_cache()).folder
    tokenizer = causal_model.load_tokenizer(folder)
    chosen = FORMATS.choose("instruction", None, "dataFormat")
    splits = chosen.part.load(Channels(DATA), hp, tokenizer, chosen.options)
    rows = pack(splits.train, splits.max_length)
    torch.manual_seed(0)
    model = causal_model.load_model(folder, hp, torch.device("cpu"))
    return rows, model, tokenizer.pad_token_id


def step(model, batch, items: int) -> float:
    loss = model(**batch, use_cache=False, num_items_in_batch=items).loss  # as the trainer
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per side")
    parser.add_argument("--batch", type=int, default=1, help="packed rows per step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hp = Hyperparameters(
        instruction_tuned=True, chat_template="tokenizer", max_input_length=256, lora_r=16,
        lora_dropout=0.0,  # the same function on both sides, step for step
    )  # fmt: skip
    rows, everywhere, pad_id = rows_and_model(hp)
    # The same weights twice: one with transformers' loss, one with the hooks.
    at_labels = copy.deepcopy(everywhere)
    LabelPositionsLoss(at_labels)
    groups = batches.micro_batches(rows, args.batch)[: args.steps + 1]
    inputs = [batches.collate(g, pad_id, torch.device("cpu")) for g in groups]
    tokens = [sum(len(r) for r in g) for g in groups]
    labels = [batches.count_labels(g) for g in groups]
    vocab = everywhere.get_output_embeddings().weight.shape[0]

    seconds = {"every position": [], "label positions": []}
    first = {}
    for k, (batch, items) in enumerate(zip(inputs, labels, strict=True)):
        for name, model in (("every position", everywhere), ("label positions", at_labels)):
            started = time.perf_counter()
            loss = step(model, batch, items)
            if k == 0:
                first[name] = loss  # the first step also warms up: not timed
            else:
                seconds[name].append(time.perf_counter() - started)

    timed_tokens = sum(tokens[1:])
    positions = sum(b["input_ids"].numel() for b in inputs[1:]) / len(inputs[1:])
    label_tokens = sum(labels[1:]) / len(labels[1:])
    logits = {"every position": positions * vocab * 4, "label positions": label_tokens * vocab * 4}
    print(f"model: SmolLM2-135M-Instruct, vocabulary {vocab:,}; {len(rows)} packed rows of "
          f"<= 256 tokens, {args.batch} per step, {args.steps} timed steps, {args.threads} "
          "thread(s)")  # fmt: skip
    print(f"label tokens: {label_tokens:.0f} of {positions:.0f} positions per step")
    print(f"{'side':<16} {'s/step':>7} {'tokens/s':>9} {'logits MB':>10} {'first loss':>11}")
    rates = {}
    for name, times in seconds.items():
        rates[name] = timed_tokens / sum(times)
        print(f"{name:<16} {statistics.median(times):>7.2f} {rates[name]:>9.1f} "
              f"{logits[name] / 1e6:>10.1f} {first[name]:>11.5f}")  # fmt: skip
    print(f"label_loss_speedup={rates['label positions'] / rates['every position']:.2f}")
    print(f"label_loss_logits_ratio={logits['label positions'] / logits['every position']:.2f}")


if __name__ == "__main__":
    main()
