"""Load the base model and tokenizer from a Hugging Face-layout folder and wrap it with LoRA."""

import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer import lora_dropout

log = logging.getLogger(__name__)

# Attention projections per architecture (config.model_type). Adapting all four attention
# projections is the usual quality/cost balance; lora_target_modules overrides it.
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "falcon": ["query_key_value", "dense"],
    "gpt_neox": ["query_key_value", "dense"],
    "bloom": ["query_key_value", "dense"],
    "gpt2": ["c_attn", "c_proj"],
}


class ModelError(ValueError):
    """The model folder or the hyperparameters cannot give a trainable model."""


def target_modules(model_type: str, hp: Hyperparameters) -> list[str]:
    if hp.lora_target_modules:
        return list(hp.lora_target_modules)
    if model_type not in TARGET_MODULES:
        known = ", ".join(sorted(TARGET_MODULES))
        raise ModelError(
            f"no default LoRA target modules for model_type {model_type!r} (known: {known}); "
            "set the lora_target_modules hyperparameter"
        )
    return TARGET_MODULES[model_type]


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it; float32 elsewhere (CPU bf16 matmuls are slow)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_dir: Path, hp: Hyperparameters, device: torch.device, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """The base causal LM, frozen, on `device` (in `dtype`, else the device's compute dtype),
    with LoRA adapters to train."""
    config = read_config(model_dir)
    modules = target_modules(config.model_type, hp)
    return with_lora(
        AutoModelForCausalLM, model_dir, config, hp, device, dtype, "CAUSAL_LM", modules
    )


def read_config(model_dir: Path):
    if not (model_dir / "config.json").exists():
        raise ModelError(f"{model_dir}: no config.json (expected a Hugging Face model folder)")
    return AutoConfig.from_pretrained(model_dir)


def with_lora(auto_class, model_dir, config, hp, device, dtype, task_type: str, modules):
    """`auto_class.from_pretrained(model_dir)` frozen on `device`, with LoRA on `modules`:
    the loading every model family shares (dtype, int8, gradient checkpointing, the log)."""
    options = {"dtype": dtype or compute_dtype(device)}
    if hp.int8_quantization:
        options.update(int8_options(device))
    base = auto_class.from_pretrained(model_dir, **options)
    if not hp.int8_quantization:
        base.to(device)
    if hp.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=modules,
        task_type=task_type,
    )
    model = get_peft_model(base, lora)
    if device.type == "cpu":  # torch's CUDA dropout is one fused kernel already
        lora_dropout.install(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "model %s: %s parameters, %s trainable (%.2f%%) with LoRA r=%d on %s",
        config.model_type,
        f"{total:,}",
        f"{trainable:,}",
        100 * trainable / total,
        hp.lora_r,
        ", ".join(sorted(lora.target_modules)),
    )
    return model


def int8_options(device: torch.device) -> dict:
    """bitsandbytes int8 needs CUDA; say so plainly instead of failing deep in a kernel."""
    if device.type != "cuda":
        raise ModelError(
            "int8_quantization needs a CUDA GPU (bitsandbytes); this process has none. "
            "Set int8_quantization: false or run on an nvidia accelerator."
        )
    from transformers import BitsAndBytesConfig  # imported here: bitsandbytes is CUDA-only

    return {
        "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
        "device_map": {"": device},
    }


def merged_model(model: PeftModel) -> PreTrainedModel:
    """The base model with the adapter folded in, for the merged/ export."""
    return model.merge_and_unload()


def greedy(model, prompt: list[int], max_new_tokens: int, tokenizer) -> list[int]:
    """The first sequence `model.generate` returns for one prompt, decoding greedily: for a
    causal model the prompt and its continuation, for an encoder-decoder the decoder's start
    token and its output."""
    ids = torch.tensor([prompt], device=next(model.parameters()).device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[0].tolist()
