"""The run's compute precision: the `precision` hyperparameter resolved on this device, once,
before the model is loaded.

bf16 means the frozen base model's weights in bfloat16 (its matmuls run in bf16), while the
LoRA weights, their gradients and AdamW's state stay float32 (peft keeps adapters in float32)
and the loss is summed in float32. On the CPU the forward runs under autocast: the LoRA
matmuls take bf16 copies of their float32 weights, where peft would cast every adapted
module's input up to float32 instead (a copy per module and a float32 matmul).

`auto` takes bf16 where it pays: on a CUDA GPU that supports it; on a CPU where a matmul of
the model's own shape measures clearly faster in bf16 than in float32 (CPUs with AMX or
AVX512-BF16 units; elsewhere bf16 is emulated and slower).
Every rank measures and all must find bf16 faster, so a job never mixes the two.
"""

import logging
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import torch
from peft.helpers import disable_input_dtype_casting

from kubetune_trainer import distributed

log = logging.getLogger(__name__)

NAMES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# bf16 must beat float32 by this much on the probe: below it, the rounding is not worth it
# (and timing noise cannot flip a run whose two rates are close).
LEAST_SPEEDUP = 1.3
PROBE_SECONDS = 0.03  # per dtype and round; three rounds, the best kept
# Below this many FLOPs the probe's matmul (and the model's) is bound by overhead, not
# arithmetic: such small models train in float32 without measuring. SmolLM2-135M's MLP
# matmul for 2,048 tokens is 3.6 GFLOP; the tests' 64-wide model's, 34 MFLOP.
LEAST_PROBE_FLOPS = 1e8


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 or fp32
    reason: str  # why, for the log
    speedup: float | None = None  # bf16's matmul rate over float32's, where measured

    @property
    def dtype(self) -> torch.dtype:
        return NAMES[self.name]

    def forward(self, model, device: torch.device):
        """The context a training or evaluation forward runs in (not its backward)."""
        if self.name != "bf16" or device.type != "cpu":
            return nullcontext()
        stack = ExitStack()
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        stack.enter_context(disable_input_dtype_casting(model))
        return stack


def resolve(choice: str, runtime, model_config, tokens: int) -> Precision:
    """`choice` (auto, bf16 or fp32) on this job's devices; `tokens` is a micro-batch's
    tokens, the probe's row count. Collective on auto: every rank calls it."""
    if choice != "auto":
        found = Precision(choice, "set by the precision hyperparameter")
    elif runtime.device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        found = Precision("bf16" if supported else "fp32",
                          f"this GPU {'supports' if supported else 'lacks'} bf16")  # fmt: skip
    else:
        found = measured(model_config, tokens)
        votes = distributed.all_sum([found.name == "bf16"], runtime)[0]
        if found.name == "bf16" and votes < runtime.world_size:
            found = Precision("fp32", "bf16 is not faster on every rank's CPU")
    log.info("precision: %s (%s)", found.name, found.reason)
    return found


def measured(model_config, tokens: int) -> Precision:
    """bf16 where a (tokens x hidden) @ (hidden x intermediate) matmul, the shape of the
    model's MLP, runs at least LEAST_SPEEDUP times faster in bf16 than in float32 here."""
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model", 512)
    inner = (getattr(model_config, "intermediate_size", None)
             or getattr(model_config, "d_ff", None) or 4 * hidden)  # fmt: skip
    shape = (max(min(tokens, 2048), 16), hidden, inner)
    if 2 * shape[0] * shape[1] * shape[2] < LEAST_PROBE_FLOPS:
        return Precision("fp32", f"auto: a {hidden}-wide model is too small for bf16 to pay")
    fp32, bf16 = matmul_rate(torch.float32, *shape), matmul_rate(torch.bfloat16, *shape)
    speedup = bf16 / fp32
    figures = (f"a {shape[0]}x{shape[1]}x{shape[2]} matmul: {bf16:.0f} GFLOP/s in bf16, "
               f"{fp32:.0f} in fp32, {speedup:.2f}x")  # fmt: skip
    name = "bf16" if speedup >= LEAST_SPEEDUP else "fp32"
    return Precision(name, f"auto on this CPU, {figures}", speedup)


def matmul_rate(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = PROBE_SECONDS):
    """GFLOP/s of an (m x k) @ (k x n) matmul in `dtype` on the CPU: the best of three rounds
    of at least `seconds` each."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)  # warm: the first call picks and compiles its kernel
    best = 0.0
    for _ in range(3):
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or runs == 0:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * m * k * n * runs / elapsed / 1e9)
    return best
