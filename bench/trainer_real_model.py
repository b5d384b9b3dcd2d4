"""CPU training throughput on a real model, SmolLM2-135M-Instruct: kubetune against a plain
Hugging Face `Trainer` (dynamic padding) and TRL's `SFTTrainer` (best-fit packing,
padding-free, completion-only loss), the same LoRA, data, epochs, seed and threads everywhere.

Each side trains in its own process (bench/real_model_sides.py), so its peak RSS is its own;
this process then scores every side's adapter with one function on the same validation
records. Reading the output: one row per side, the machine's matmul GFLOP/s, what kubetune's
`precision: auto` picks here, and last `real_model_speedup_vs_hf_trainer=`,
`real_model_speedup_vs_trl=`, `real_model_speedup_vs_trl_bf16=` (non-padding tokens/s of
kubetune at the precision auto picks over theirs), `real_model_bf16_eval_loss_gap=` (bf16's
eval loss against fp32's, relative; the stated tolerance is 1%), `real_model_mfu_fp32=` and
`real_model_mfu_bf16=` (kubetune's, each against the matmul peak of its own dtype).
Figures compare within one run: other load on the machine moves every side.

    .venv/bin/python bench/trainer_real_model.py                # ~10 minutes on 2 idle cores
    .venv/bin/python bench/trainer_real_model.py --quick        # smoke run, ~2 minutes
    .venv/bin/python bench/trainer_real_model.py --sides kubetune --profile /tmp/p.txt
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "trainer-image")]

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from kubetune.local import smollm2  # noqa: E402
from kubetune_trainer.data import IGNORE_INDEX, load_splits  # noqa: E402
from kubetune_trainer.model import load_tokenizer  # noqa: E402
from kubetune_trainer.packing import pack  # noqa: E402
from kubetune_trainer.precision import measured  # noqa: E402

SIDES_SCRIPT = Path(__file__).with_name("real_model_sides.py")
ROW_TOKENS = 1024  # packed rows (kubetune, TRL) and the longest sample
# Alpaca-like lengths in words (each word one token): prompt (instruction + input) lognormal
# median 20, sigma 0.8; response median 45, sigma 0.9 (mean 67), with the long tail capped.
PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_CAP = 20, 0.8, 256
RESPONSE_MEDIAN, RESPONSE_SIGMA, RESPONSE_CAP = 45, 0.9, 512
KEYS = 64  # the instruction's words come from 64 keys; the response spells each key's partner
LORA = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    # All linear layers: the quick start hub's default for this model (examples/quickstart).
    "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=56, help="training records")
    parser.add_argument("--val-records", type=int, default=16, help="validation records")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows-per-step", type=int, default=1, help="packed rows per step")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--sides", default="kubetune,kubetune-bf16,hf,trl,trl-bf16",
                        help="comma-separated")  # fmt: skip
    parser.add_argument("--profile", help="run the sides under pyinstrument; report to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few records, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.records, args.val_records, args.epochs = 24, 6, 1
    return args


# --- data ---------------------------------------------------------------------------------


def english_words(tokenizer, n: int = 4000) -> list[str]:
    """Lowercase words the tokenizer holds as one token with a leading space, in its merge
    order (roughly frequency): real English as the real tokenizer sees it."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [t[1:] for t, _ in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower()]
    return [w for w in words if 3 <= len(w) <= 10][:n]


def records(n: int, seed: int, words: list[str]) -> list[dict]:
    """Prompt/completion records: the instruction names some of KEYS key words, padded out with
    an input of other words; the response spells each key's fixed partner, in order, then
    again, to its length. The partners are a mapping to learn; the input carries no loss."""
    keys, partners = words[:KEYS], words[KEYS : 2 * KEYS]
    filler = words[2 * KEYS :]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt_words = lognormal(rng, PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_CAP)
        response_words = lognormal(rng, RESPONSE_MEDIAN, RESPONSE_SIGMA, RESPONSE_CAP)
        asked = [rng.randrange(KEYS) for _ in range(max(1, min(12, prompt_words // 3)))]
        context = [rng.choice(filler) for _ in range(max(0, prompt_words - len(asked) - 6))]
        prompt = f"Give the partner of each word: {' '.join(keys[i] for i in asked)}."
        if context:
            prompt += f"\nInput: {' '.join(context)}."
        answer = [partners[asked[i % len(asked)]] for i in range(response_words)]
        out.append({"prompt": prompt + "\nResponse:", "completion": f" {' '.join(answer)}."})
    return out


def lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return min(cap, max(3, round(rng.lognormvariate(math.log(median), sigma))))


def write_job(job: Path, args, tokenizer) -> None:
    words = english_words(tokenizer)
    for channel, n, seed in (("train", args.records, 1), ("validation", args.val_records, 2)):
        folder = job / "data" / channel
        folder.mkdir(parents=True)
        lines = (json.dumps(r) + "\n" for r in records(n, seed, words))
        (folder / f"{channel}.jsonl").write_text("".join(lines))
    # Field values only: kubetune renders exactly the text TRL is given.
    template = {"prompt": "{prompt}", "completion": "{completion}"}
    (job / "data" / "train" / "template.json").write_text(json.dumps(template))


# --- the machine and the model's FLOPs ----------------------------------------------------


def matmul_gflops(dtype: torch.dtype, m: int = 2048, k: int = 576, n: int = 1536) -> float:
    """Best of 10 of one (m x k) @ (k x n) matmul: SmolLM2's MLP shape for 2,048 tokens."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(10):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best / 1e9


def flops_per_token(config, sample_lengths: list[int]) -> tuple[float, str]:
    """LoRA training FLOPs per token: 4N (forward 2N, backward through the activations 2N;
    the frozen weights get no weight gradients) plus causal attention, forward 2 s^2 h per
    layer and sample, backward twice that. N counts the layers and the LM head at every
    position, whatever a side skips; embedding lookups and the small LoRA matmuls are left out."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = h // config.num_attention_heads * config.num_key_value_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    n = layers * per_layer + config.vocab_size * h
    attention = sum(6 * s * s * h * layers for s in sample_lengths) / sum(sample_lengths)
    formula = (
        f"FLOPs/token = 4 x N ({n / 1e6:.1f} M: layers + LM head) + attention "
        f"sum(6 s^2 h L) / sum(s) ({attention / 1e6:.1f} M) = {(4 * n + attention) / 1e6:.0f} M"
    )
    return 4 * n + attention, formula


# --- running the sides and scoring them -----------------------------------------------------


def run_side(name: str, job: Path, threads: int, profile: str | None) -> dict:
    """The side in a child process; its peak RSS from wait4, which is that child's alone."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    if profile:
        env["BENCH_PROFILE"] = f"{profile}.{name}" if "," in profile else profile
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(SIDES_SCRIPT), name, str(job)], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"side {name} failed with exit code {child.returncode}")
    result = json.loads((job / name / "result.json").read_text())
    result.update(side=name, rss_mib=usage.ru_maxrss / 1024, wall=time.perf_counter() - started)
    return result


def eval_loss(model_dir: Path, adapter: Path | None, samples) -> float:
    """Mean loss per label token, one sample per forward (no padding), transformers' own loss:
    the same function for every side's adapter, and for the base model (no adapter)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for sample in samples:
            n = sum(label != IGNORE_INDEX for label in sample.labels[1:])  # labels shift by one
            ids, labels = torch.tensor([sample.input_ids]), torch.tensor([sample.labels])
            total += model(input_ids=ids, labels=labels).loss.item() * n
            tokens += n
    return total / tokens


# --- main and output ------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # loading bars and notices would bury the table
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    from real_model_sides import SIDES, hyperparameters  # beside this file

    names = args.sides.split(",")
    unknown = [n for n in names if n not in SIDES]
    if unknown:
        raise SystemExit(f"--sides: unknown {unknown}; known: {', '.join(SIDES)}")
    model_dir = smollm2.ensure(smollm2.default_cache()).folder
    tokenizer = load_tokenizer(model_dir)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-real-") as tmp:
        job = Path(tmp)
        write_job(job, args, tokenizer)
        settings = {
            "model": str(model_dir),
            "epochs": args.epochs,
            "lr": args.lr,
            "seed": 0,
            "threads": args.threads,
            "row_tokens": ROW_TOKENS,
            "rows_per_step": args.rows_per_step,
            **LORA,
        }
        # Tokenized by the product, as the kubetune and hf sides train on them.
        hp = hyperparameters(settings)
        splits = load_splits(job / "data" / "train", job / "data" / "validation", hp, tokenizer)
        lengths = [len(s.input_ids) for s in splits.train]
        rows = pack(splits.train, ROW_TOKENS)
        # Trainer's batch: as many samples as the packed sides put into a step, on average.
        settings["hf_batch"] = max(1, round(len(lengths) / len(rows) * args.rows_per_step))
        (job / "settings.json").write_text(json.dumps(settings))
        print(
            f"bench: SmolLM2-135M-Instruct, {len(lengths)} train / {len(splits.validation)}"
            f" validation records, {args.epochs} epoch(s), lr {args.lr}, seed 0, "
            f"{args.threads} thread(s); load average before {load:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        print(
            f"data: tokens per record median {sorted(lengths)[len(lengths) // 2]}, mean "
            f"{sum(lengths) / len(lengths):.0f}, max {max(lengths)}; {len(rows)} packed rows of "
            f"<= {ROW_TOKENS} tokens ({len(lengths) / len(rows):.1f} records a row)"
        )
        print(
            f"LoRA r={LORA['lora_r']} alpha {LORA['lora_alpha']} dropout {LORA['lora_dropout']} "
            f"on {','.join(LORA['lora_targets'])}; a step: {args.rows_per_step} packed row(s) "
            f"(kubetune, trl) or {settings['hf_batch']} padded records (hf)",
            flush=True,
        )
        results = [run_side(name, job, args.threads, args.profile) for name in names]
        before = eval_loss(model_dir, None, splits.validation)
        for r in results:
            r["eval_loss"] = eval_loss(model_dir, job / r["side"] / "adapter", splits.validation)
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    config = AutoConfig.from_pretrained(model_dir)
    per_token, formula = flops_per_token(config, lengths)
    auto = measured(config, ROW_TOKENS * args.rows_per_step)
    report(results, SIDES, before, peak, per_token, formula, auto, os.getloadavg()[0])


def report(results, sides, before, peak, per_token, formula, auto, load_after) -> None:
    fp32, bf16 = peak["fp32"], peak["bf16"]
    print(f"machine: matmul 2048x576x1536 fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s "
          f"(bf16/fp32 {bf16 / fp32:.2f}); load average after {load_after:.1f}")  # fmt: skip
    print(f"kubetune precision auto here: {auto.name} ({auto.reason})")
    print(formula + "; MFU = tokens/s x FLOPs/token / the matmul peak of the side's dtype")
    print(f"eval loss before training: {before:.4f}")
    print(
        f"{'side':<13} {'dtype':<5} {'steps':>5} {'tokens':>8} {'padding':>7} {'train s':>8} "
        f"{'tokens/s':>8} {'MFU':>6} {'RSS MiB':>7} {'eval loss':>9}"
    )
    rate = {}
    for r in results:
        rate[r["side"]] = r["tokens"] / r["seconds"]
        mfu = rate[r["side"]] * per_token / (peak[sides[r["side"]].dtype] * 1e9)
        r["mfu"] = mfu
        print(
            f"{r['side']:<13} {sides[r['side']].dtype:<5} {r['steps']:>5} {r['tokens']:>8,} "
            f"{1 - r['tokens'] / r['positions']:>7.1%} {r['seconds']:>8.1f} "
            f"{rate[r['side']]:>8.1f} {mfu:>6.1%} {r['rss_mib']:>7.0f} {r['eval_loss']:>9.4f}"
        )
    for r in results:
        print(f"  {r['side']}: {sides[r['side']].what}; train s = {r['timed']}; "
              f"process wall {r['wall']:.0f} s")  # fmt: skip
    by_side = {r["side"]: r for r in results}
    ours = {"fp32": by_side.get("kubetune"), "bf16": by_side.get("kubetune-bf16")}
    picked = ours[auto.name] or ours["fp32"] or ours["bf16"]
    for other, key in (("hf", "hf_trainer"), ("trl", "trl"), ("trl-bf16", "trl_bf16")):
        value = "n/a"
        if picked and other in rate:
            value = f"{rate[picked['side']] / rate[other]:.2f}"
        print(f"real_model_speedup_vs_{key}={value}")
    if ours["fp32"] and ours["bf16"]:
        gap = ours["bf16"]["eval_loss"] / ours["fp32"]["eval_loss"] - 1
        print(f"real_model_bf16_eval_loss_gap={gap:+.4f}")
    for dtype, r in ours.items():
        print(f"real_model_mfu_{dtype}=" + (f"{r['mfu']:.4f}" if r else "n/a"))


if __name__ == "__main__":
    main()
