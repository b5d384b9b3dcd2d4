"""Hyperparameters, with the JumpStart names, defaults and rules (snake_case on purpose).

`Hyperparameters` is the resolved set the trainer receives, every field with its default.
`HyperparameterOverrides` is what a FineTuneJob or a hub model's defaults may set: the same
fields and rules, nothing defaulted, so the API server never writes defaults into `spec` and
resolution (job > hub model > JumpStart) happens in the operator.
"""

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model
from pydantic_core import PydanticUndefined

from kubetune.api.v1alpha1.base import Rule, Strict

# -1 means "all" (or "automatic" for max_input_length); 0 and other negatives are mistakes.
AllOrCount = Annotated[
    int,
    Rule(
        cel="self == -1 || self >= 1",
        message="must be -1 or >= 1",
        check=lambda v: v == -1 or v >= 1,
    ),
]
TargetModule = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.*-]+$", max_length=128)]

NOT_INT8_WITH_FSDP = Rule(
    cel="!(has(self.int8_quantization) && has(self.enable_fsdp) && "
    "self.int8_quantization && self.enable_fsdp)",
    message="int8_quantization and enable_fsdp cannot both be true",
    check=lambda h: not (h.int8_quantization and h.enable_fsdp),
)


class Hyperparameters(Strict):
    """Training hyperparameters; JumpStart names keep their JumpStart meaning."""

    rules = (NOT_INT8_WITH_FSDP,)

    epoch: int = Field(5, ge=1, description="Passes over the training data. Default: 5.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate. Default: 0.0001.")
    instruction_tuned: bool = Field(
        False,
        description="Instruction tuning from .jsonl records (loss on completions only) instead "
        "of domain adaptation on plain text. Default: false.",
    )
    chat_template: Literal["tokenizer", "chatml", "llama3"] | None = Field(
        None,
        description="Instruction tuning: render each record as a user turn and an assistant "
        "turn through a chat template: `tokenizer` (the model's own; an instruct model's "
        "format), `chatml` or `llama3`; the loss is on the assistant turn. Unset: the plain "
        "template.json text. Default: unset.",
    )
    per_device_train_batch_size: int = Field(
        4, ge=1, description="Training sequences per accelerator per step. Default: 4."
    )
    per_device_eval_batch_size: int = Field(
        1, ge=1, description="Evaluation sequences per accelerator per step. Default: 1."
    )
    max_train_samples: AllOrCount = Field(
        -1, description="Use at most this many training samples; -1 uses all. Default: -1."
    )
    max_val_samples: AllOrCount = Field(
        -1, description="Use at most this many validation samples; -1 uses all. Default: -1."
    )
    max_input_length: AllOrCount = Field(
        -1,
        description="Tokens per sample (domain adaptation: per block). -1 means min(1024, "
        "tokenizer maximum); other values are capped at the tokenizer maximum. Default: -1.",
    )
    validation_split_ratio: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the training data held out for validation when no validation "
        "channel is given. Default: 0.2.",
    )
    train_data_split_seed: int = Field(
        0, description="Seed of the train/validation split. Default: 0."
    )
    preprocessing_num_workers: int | None = Field(
        None, ge=1, description="Processes for tokenization; unset means one. Default: unset."
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank. Default: 8.")
    lora_alpha: int = Field(
        32, ge=1, description="LoRA scaling numerator (alpha / r). Default: 32."
    )
    lora_dropout: float = Field(
        0.05, ge=0, lt=1, description="Dropout on the LoRA branch. Default: 0.05."
    )
    int8_quantization: bool = Field(
        False,
        description="Load the base model in int8 (bitsandbytes, CUDA only); not with enable_fsdp. "
        "Default: false.",
    )
    enable_fsdp: bool = Field(
        False, description="Shard the model across all ranks with FSDP. Default: false."
    )
    # kubetune additions: new names only, never a changed meaning for the JumpStart ones.
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches accumulated per optimizer step. Default: 1."
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of steps spent warming up the learning rate. Default: 0.",
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up. Default: linear."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay. Default: 0.")
    max_grad_norm: float = Field(
        1.0, ge=0, description="Gradient clipping norm; 0 disables clipping. Default: 1.0."
    )
    packing: bool = Field(
        True,
        description="Pack several samples per row without padding (attention does not cross "
        "samples). Default: true.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Compute precision of the frozen base model: bf16 (its weights and "
        "matmuls in bfloat16; LoRA weights, gradients and optimizer state stay float32), fp32, "
        "or auto: bf16 on a GPU that supports it and on a CPU where bf16 matmuls measure "
        "faster (AMX, AVX512-BF16), else fp32. Default: auto.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save accelerator memory. Default: false."
    )
    checkpoint_interval_steps: int = Field(
        100,
        ge=0,
        description="Checkpoint every this many optimizer steps, and at each epoch end; 0 "
        "checkpoints at epoch ends only. Default: 100.",
    )
    merge_weights: bool = Field(
        True,
        description="Also export the base model with the adapter merged in (merged/). "
        "Default: true.",
    )
    merged_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype of merged/'s weights: auto keeps the base model's own (the dtype its "
        "config.json names; float32 where it names none), or bfloat16, float16, float32. "
        "Default: auto.",
    )
    lora_target_modules: list[TargetModule] | None = Field(
        None,
        max_length=32,
        description="Module names LoRA adapts; unset chooses them per architecture. "
        "Default: unset.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations (epochs) without the eval loss improving "
        "by more than early_stopping_threshold; the best epoch is exported. Unset: train "
        "every epoch. Default: unset.",
    )
    early_stopping_threshold: float = Field(
        0.0,
        ge=0,
        description="Least decrease of the eval loss that counts as an improvement "
        "(early_stopping_patience). Default: 0.",
    )
    seed: int = Field(0, description="Seed for weight init, dropout and shuffling. Default: 0.")


def _variant(name: str, doc: str, default: Any) -> type[BaseModel]:
    """The same fields and rules as `Hyperparameters`, every default replaced by `default`."""
    fields = {}
    for field_name, info in Hyperparameters.model_fields.items():
        changed = copy.copy(info)
        changed.default = default
        fields[field_name] = (info.annotation, changed)
    base = type(f"_{name}Base", (Strict,), {"rules": (NOT_INT8_WITH_FSDP,)})
    return create_model(name, __base__=base, __doc__=doc, **fields)


# Unset means "resolve later". Explicit nulls never get here: they are pruned on load, as the
# API server prunes nulls of non-nullable fields.
HyperparameterOverrides = _variant(
    "HyperparameterOverrides",
    "Hyperparameters to set; unset ones come from the hub model's defaults, then the "
    "JumpStart defaults. Names and rules as in the JumpStart fine-tuning documentation.",
    default=None,
)

# What a trainer receives: every hyperparameter spelled out, so a trainer image never applies
# defaults of its own (a missing key is an error, not a silent default).
ResolvedHyperparameters = _variant(
    "ResolvedHyperparameters",
    "All hyperparameters, resolved (job > hub model defaults > JumpStart defaults).",
    default=PydanticUndefined,
)
