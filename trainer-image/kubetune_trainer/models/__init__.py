"""Model families: how a Hugging Face model folder becomes a LoRA model to train, its rows
and batches, and its exported artifacts. Bundled: `causal-lm` and `seq2seq-lm`; more come
from packages with a `kubetune.models` entry point. Without a choice in the job, the first
family whose `matches(config)` accepts the model's config.json is used.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.registry import Chosen, PartError, Registry


@dataclass(frozen=True)
class ModelFamily:
    name: str
    options: type[BaseModel]
    # Auto choice: does this family train a model with this transformers config?
    matches: Callable[[Any], bool]
    # (model_dir, hp, device, dtype or None, options) -> the frozen base with LoRA adapters
    load: Callable[[Path, Hyperparameters, torch.device, torch.dtype | None, BaseModel], Any]
    # (samples, hp, max_length, packed) -> rows; packed rows only where the family packs
    rows: Callable[[list, Hyperparameters, int, bool], list]
    # (rows, pad_id, device) -> the model's keyword arguments, labels included
    collate: Callable[[list, int, torch.device], dict[str, torch.Tensor]]
    # rows -> label tokens that count in the loss
    count_labels: Callable[[list], int]
    # (model, tokenizer, staging, hp) -> writes adapter/ and, with merge_weights, merged/ in
    # hp.merged_dtype (resolved by the recipe: bfloat16, float16 or float32, never auto); the
    # model's peft config names the hub modelId as its base (model_files has the helpers)
    export: Callable[[Any, Any, Path, Hyperparameters], None]
    description: str = ""
    # (model, prompt ids, max new tokens, tokenizer) -> the greedy answer's ids, for the test
    # channel's sample answers; None: the family writes none (the test loss is still scored)
    generate: Callable[[Any, list[int], int, Any], list[int]] | None = None


MODELS = Registry[ModelFamily]("model family", "kubetune.models")


def choose(name: str | None, options: dict | None, config) -> "Chosen[ModelFamily]":
    """The job's model family, or the first that matches the model's config.json."""
    if name is None:
        name = next((f.name for f in MODELS if f.matches(config)), None)
        if name is None:
            raise PartError(
                f"spec.trainer.model: no model family trains model_type {config.model_type!r} "
                f"(known: {', '.join(MODELS.names())}); name one, or install one that does"
            )
    return MODELS.choose(name, options, "spec.trainer.model")


# The bundled families register themselves; imported last, as they import the names above.
from kubetune_trainer.models import causal, seq2seq  # noqa: E402, F401
