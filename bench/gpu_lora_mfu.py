"""GPU throughput and LoRA-MFU of a Llama-3-8B-shaped model on packed 2048-token rows.

Random bf16 weights built directly on the GPU (nothing downloaded), LoRA r=16 on q/k/v/o,
rows packed by the trainer's own `pack` and `collate`, and the model set up as the product's
causal-lm family sets it up: bf16 base (what `precision: auto` gives on a GPU with bf16), the
loss at label positions only (`models/label_loss.py`; the first --prompt-share of each
sample is prompt, without labels, as in instruction data) and attention per packed sample
(`models/packed_attention.py`; `--attn sdpa` for transformers' masked SDPA instead). Prints
non-padding tokens/s and the share of the GPU's bf16 peak the model FLOPs reach.
`--flops-only` prints the FLOP arithmetic without a GPU; `--smoke` runs a small model on the
CPU, to check the script where no GPU is lent.

    .venv/bin/python bench/gpu_lora_mfu.py [--batch-size 2] [--gradient-checkpointing]
"""

import argparse
import math
import random
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune.local.tiny_models import random_llama
from kubetune_trainer.batches import collate, count_labels
from kubetune_trainer.formats.samples import IGNORE_INDEX
from kubetune_trainer.model import TARGET_MODULES
from kubetune_trainer.models import packed_attention
from kubetune_trainer.models.label_loss import LabelPositionsLoss
from kubetune_trainer.packing import pack

ROW_TOKENS = 2048
H100_BF16_DENSE_FLOPS = 989e12  # H100 SXM (and H200) bf16 dense peak, no sparsity
LLAMA3_8B = LlamaConfig(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    use_cache=False,  # training: no KV cache (and none under gradient checkpointing)
)
SMOKE = LlamaConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=512, vocab_size=1000,
                    tie_word_embeddings=False, use_cache=False)  # fmt: skip


def matmul_params(c: LlamaConfig) -> int:
    """Weights a token is multiplied through (the embedding is a lookup, not a matmul).
    Llama-3-8B: 32 x (2 x 4096^2 q,o + 2 x 4096 x 1024 k,v + 3 x 4096 x 14336 MLP)
    + 4096 x 128256 head = 32 x 218.1 M + 525.3 M = 7.50 B. LoRA's 13.6 M (0.2%) left out."""
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attention = 2 * c.hidden_size**2 + 2 * c.hidden_size * kv
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (attention + mlp) + c.hidden_size * c.vocab_size


def lora_flops(c: LlamaConfig, sample_lens: list[int]) -> float:
    """Model FLOPs of one LoRA training step over samples of these lengths.

    Matmuls, per token: forward 2N; backward only the activation gradients, 2N, since the
    frozen base weights need no weight gradients (full fine-tuning: 6N). LoRA: ~4N.
    Attention, per layer for a sample of s tokens, causal (a kernel skips masked blocks):
    QK^T and AV each 2 FLOPs x s^2/2 pairs x hidden -> forward 2 s^2 h; backward takes the
    gradients of Q, K, V and the scores, all activations, so 2x forward -> 6 s^2 h in all.
    Packing keeps samples apart, so each sample counts with its own s, not the row's 2048.
    Recomputation under gradient checkpointing is not model FLOPs: it does not count.
    """
    matmuls = 4 * matmul_params(c) * sum(sample_lens)
    attention = 6 * c.num_hidden_layers * c.hidden_size * sum(s * s for s in sample_lens)
    return matmuls + attention


def synthetic_lengths(n_tokens: int, median: int, sigma: float, seed: int) -> list[int]:
    """Lognormal sample lengths, capped at a row, adding up to at least n_tokens."""
    rng, lens = random.Random(seed), []
    while sum(lens) < n_tokens:
        lens.append(min(ROW_TOKENS, max(8, round(rng.lognormvariate(math.log(median), sigma)))))
    return lens


def main() -> int:
    args = parse_args()
    c = SMOKE if args.smoke else LLAMA3_8B
    steps = args.warmup + args.steps
    # 10% more tokens than the rows hold: packing leaves a little room in most rows.
    lens = synthetic_lengths(int(1.10 * steps * args.batch_size * ROW_TOKENS), args.median, 0.8, 0)
    per_token = lora_flops(c, lens) / sum(lens)
    print(
        f"N = {matmul_params(c) / 1e9:.2f} B matmul params; {len(lens)} samples, median "
        f"{sorted(lens)[len(lens) // 2]}, mean {sum(lens) / len(lens):.0f} tokens; "
        f"{per_token / 1e9:.2f} GFLOP/token (4N = {4 * matmul_params(c) / 1e9:.2f}, "
        f"attention {(per_token - 4 * matmul_params(c)) / 1e9:.3f})"
    )
    if args.flops_only:
        for tps in (5_000, 10_000, 15_000):  # what a measured figure would mean
            print(f"  {tps:,} tokens/s -> LoRA-MFU {tps * per_token / args.peak:.1%}")
        return 0
    if not torch.cuda.is_available() and not args.smoke:
        print("gpu_lora_mfu: needs a CUDA GPU (none found); --flops-only and --smoke run "
              "without one")  # fmt: skip
        return 1

    model = build_model(c, args)
    device = next(model.parameters()).device
    rng = random.Random(0)
    samples = []
    for n in lens:
        ids = [rng.randrange(c.vocab_size) for _ in range(n)]
        prompt = int(args.prompt_share * n)
        samples.append((ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    rows = pack(samples, ROW_TOKENS)
    assert len(rows) >= steps * args.batch_size, f"{len(rows)} rows for {steps} steps"
    random.Random(1).shuffle(rows)  # best-fit decreasing puts the long samples first
    batches = [rows[i * args.batch_size : (i + 1) * args.batch_size] for i in range(steps)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    real = padded = 0
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == args.warmup:  # warm-up steps (allocator, kernel autotuning) are not timed
            synchronize(device)
            started = time.perf_counter()
        inputs = collate(batch, 0, device)
        items = max(count_labels(batch), 1)
        # No KV cache: with one, transformers skips the packed-sequence mask.
        model(**inputs, use_cache=False, num_items_in_batch=items).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup:
            real += sum(len(r) for r in batch)
            padded += inputs["input_ids"].numel()
    synchronize(device)
    seconds = time.perf_counter() - started
    timed_lens = [s for b in batches[args.warmup :] for r in b for s in r.seq_lens]
    flops = lora_flops(c, timed_lens)
    print(
        f"{args.steps} steps x {args.batch_size} rows: {real:,} tokens in {seconds:.1f} s, "
        f"padding {1 - real / padded:.1%}, attention {args.attn}, prompt share "
        f"{args.prompt_share:.0%}, peak memory {peak_memory(device) / 2**30:.1f} GiB"
    )
    print(f"tokens_per_second={real / seconds:.0f}")
    print(f"lora_mfu={flops / seconds / args.peak:.3f}")
    return 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else 0


def build_model(c: LlamaConfig, args: argparse.Namespace):
    # Initialized in place on the GPU: no 16 GB detour through host memory.
    device = "cpu" if args.smoke else "cuda"
    attn = "sdpa" if args.attn == packed_attention.NAME else args.attn
    model = random_llama(c, device=device, dtype=torch.bfloat16, attn_implementation=attn)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    hp = Hyperparameters(lora_r=16)  # the product's defaults for alpha and dropout
    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=TARGET_MODULES["llama"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora).train()
    LabelPositionsLoss(model)  # as the causal-lm family loads it
    if args.attn == packed_attention.NAME:
        packed_attention.install(model)
    return model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 2 rows fit 80 GB: 16 GB of weights, ~5 MB of activations per token, ~6 GB of logits.
    parser.add_argument("--batch-size", type=int, default=2, help="packed rows per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--median", type=int, default=150, help="median sample length")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--attn",
        default=packed_attention.NAME,
        help="attn_implementation; default: the product's per-sample attention",
    )
    parser.add_argument(
        "--prompt-share",
        type=float,
        default=0.35,
        help="share of each sample without labels (instruction prompts)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a small model on the CPU, a few steps: checks the script",
    )
    parser.add_argument("--peak", type=float, default=H100_BF16_DENSE_FLOPS, help="peak FLOP/s")
    parser.add_argument("--flops-only", action="store_true", help="print the arithmetic; no GPU")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
