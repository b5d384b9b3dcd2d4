"""`causal-lm`: decoder-only models (Llama, Mistral, Qwen, Gemma, GPT-2 ...) with LoRA, trained
on packed rows (padding-free, positions restart per sample), exported as adapter/ and merged/."""

from pathlib import Path

from kubetune.api.v1alpha1.outputs import ADAPTER, MERGED
from kubetune_trainer import batches, model_files
from kubetune_trainer import model as causal_model
from kubetune_trainer.models import MODELS, ModelFamily, packed_attention
from kubetune_trainer.models.label_loss import LabelPositionsLoss
from kubetune_trainer.packing import one_per_row, pack
from kubetune_trainer.registry import NoOptions


def load(model_dir: Path, hp, device, dtype, options):
    model = causal_model.load_model(model_dir, hp, device, dtype=dtype)
    LabelPositionsLoss(model)  # on the peft model: the outermost module the step calls
    packed_attention.install(model)
    return model


def rows(samples, hp, max_length: int, packed: bool):
    return pack(samples, max_length) if packed else one_per_row(samples)


def generate(model, prompt: list[int], max_new_tokens: int, tokenizer) -> list[int]:
    """Greedy continuation of the prompt, which is the model's input: the new tokens only."""
    return causal_model.greedy(model, prompt, max_new_tokens, tokenizer)[len(prompt) :]


def export(model, tokenizer, staging: Path, hp) -> None:
    packed_attention.uninstall(model)
    model_files.save_adapter(model, tokenizer, staging / ADAPTER)
    if hp.merge_weights:
        # Last: merging folds the adapter into the base weights in place.
        merged = causal_model.merged_model(model)
        model_files.save_merged(merged, tokenizer, staging / MERGED, hp.merged_dtype)


MODELS.add(
    ModelFamily(
        name="causal-lm",
        options=NoOptions,
        matches=lambda config: not getattr(config, "is_encoder_decoder", False),
        load=load,
        rows=rows,
        collate=batches.collate,
        count_labels=batches.count_labels,
        export=export,
        description="Decoder-only language models; the default for them.",
        generate=generate,
    )
)
