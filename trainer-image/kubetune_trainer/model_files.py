"""What makes adapter/ and merged/ usable without the trainer's scratch folder: the base model
named by its hub modelId, the tokenizer and generation config beside the weights, and merged/
in the dtype the merged_dtype hyperparameter resolves to. Every bundled model family's export
writes its folders with these."""

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def merged_dtype(choice: str, base_config) -> str:
    """merged_dtype resolved: `auto` is the dtype the base model's config.json names
    (transformers 5 calls it `dtype`, older ones `torch_dtype`), float32 where it names none
    or one merged/ cannot hold (a quantized checkpoint's int8)."""
    if choice != "auto":
        return choice
    named = getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None)
    name = str(named).removeprefix("torch.") if named is not None else None
    if name not in DTYPES:
        if name is not None:
            log.info("the base model's dtype %s is not one merged/ keeps: merged/ in float32", name)
        return "float32"
    return name


def name_base_model(model, model_id: str) -> None:
    """The base model, as adapter_config.json's base_model_name_or_path and in its README, is
    the hub modelId, which outlives the job: peft takes both from the folder the base was
    loaded from, the scratch copy."""
    for peft_config in getattr(model, "peft_config", {}).values():
        peft_config.base_model_name_or_path = model_id
    if hasattr(model, "get_base_model"):
        base = model.get_base_model()  # the model card's base_model and its tag read these
        base.name_or_path = base.config.name_or_path = model_id


def save_adapter(model, tokenizer, folder: Path) -> None:
    """The LoRA weights (peft), the tokenizer and the base model's generation config."""
    # Not peft's "auto": that looks base_model_name_or_path up on the Hugging Face Hub to see
    # whether the vocabulary was resized. It never is here, and the base embeddings are frozen.
    model.save_pretrained(folder, save_embedding_layers=False)
    tokenizer.save_pretrained(folder)
    base = model.get_base_model()
    if base.can_generate() and base.generation_config is not None:
        base.generation_config.save_pretrained(folder)


def save_merged(merged, tokenizer, folder: Path, dtype: str) -> None:
    """The merged model in `dtype` (merged in the training dtype, then cast), with the
    tokenizer; save_pretrained writes the generation config and the dtype in config.json.
    `auto` (a call outside the recipe, which resolves it) keeps the dtype it has."""
    if dtype in DTYPES:
        merged.to(DTYPES[dtype])
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
