"""`seq2seq-lm`: encoder-decoder models (Flan-T5, T5, mT5) with LoRA. A sample's leading
no-loss tokens (the prompt) go to the encoder and the rest to the decoder; a sample that is
all loss (a domain-adaptation block) is cut in half, as T5's prefix language modelling
objective does: the first half is the input, the second half the target.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune.api.v1alpha1.outputs import ADAPTER, MERGED
from kubetune_trainer import model_files
from kubetune_trainer.formats.samples import IGNORE_INDEX, Sample
from kubetune_trainer.model import ModelError, greedy, read_config, with_lora
from kubetune_trainer.models import MODELS, ModelFamily
from kubetune_trainer.registry import NoOptions

log = logging.getLogger(__name__)

# Every attention projection, self- and cross-attention alike (T5 names them q, k, v, o in
# both), as the causal family adapts all four; lora_target_modules overrides it.
TARGET_MODULES = {
    "t5": ["q", "k", "v", "o"],
    "mt5": ["q", "k", "v", "o"],
    "umt5": ["q", "k", "v", "o"],
}


@dataclass
class Seq2SeqRow:
    """One sample: the encoder's tokens, and the decoder's tokens with their labels.

    `decoder_ids` are the target tokens the decoder reads (shifted right, after the start
    token), whether or not they carry loss: a chat's later user turns are read, not learnt.
    """

    input_ids: list[int]
    decoder_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.decoder_ids):
            raise ValueError(
                f"a seq2seq row has {len(self.decoder_ids)} decoder tokens but "
                f"{len(self.labels)} labels; blank a row with [IGNORE_INDEX] * len(row.labels)"
            )

    def __len__(self) -> int:
        """Tokens the model reads, encoder and decoder: what throughput counts."""
        return len(self.input_ids) + len(self.decoder_ids)


def target_modules(model_type: str, hp: Hyperparameters) -> list[str]:
    if hp.lora_target_modules:
        return list(hp.lora_target_modules)
    if model_type not in TARGET_MODULES:
        known = ", ".join(sorted(TARGET_MODULES))
        raise ModelError(
            f"no default LoRA target modules for the encoder-decoder model_type {model_type!r} "
            f"(known: {known}); set the lora_target_modules hyperparameter"
        )
    return TARGET_MODULES[model_type]


def matches(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def load(
    model_dir: Path,
    hp: Hyperparameters,
    device: torch.device,
    dtype: torch.dtype | None,
    options: NoOptions,
):
    """The base model, frozen, on `device`, with LoRA adapters to train; its loss honours
    `num_items_in_batch` as transformers' causal models do."""
    config = read_config(model_dir)
    if config.decoder_start_token_id != config.pad_token_id:
        # collate starts the decoder with the pad token, as every T5 does.
        raise ModelError(
            f"{model_dir}: decoder_start_token_id {config.decoder_start_token_id} is not the "
            f"pad token {config.pad_token_id}; seq2seq-lm trains T5-style models"
        )
    modules = target_modules(config.model_type, hp)
    model = with_lora(
        AutoModelForSeq2SeqLM, model_dir, config, hp, device, dtype, "SEQ_2_SEQ_LM", modules
    )
    model.register_forward_hook(_loss_over_items, with_kwargs=True)
    return model


def _loss_over_items(module, args, kwargs, output):
    """T5 averages its loss over the micro-batch's labels; the train step wants the sum over
    them divided by the step's label count on all ranks (`num_items_in_batch`), so that
    accumulation and ranks weigh every label token the same."""
    labels, items = kwargs.get("labels"), kwargs.get("num_items_in_batch")
    if labels is None or items is None or getattr(output, "logits", None) is None:
        return None
    logits = output.logits
    output.loss = (
        F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            labels.to(logits.device).reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        / items
    )
    return output


def rows(samples: list[Sample], hp: Hyperparameters, max_length: int, packed: bool) -> list:
    """One row per sample: packing would concatenate samples, and T5's attention has no mask
    that keeps packed samples apart."""
    if packed:  # the training rows; validation rows are never packed
        log.info("packing does not apply to seq2seq-lm models: one row per sample")
    return [to_row(sample) for sample in samples]


def to_row(sample: Sample) -> Seq2SeqRow:
    input_ids, labels = sample
    cut = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    if cut == 0:  # loss everywhere (domain adaptation): prefix language modelling
        cut = len(input_ids) // 2
    return Seq2SeqRow(input_ids[:cut], input_ids[cut:], list(labels[cut:]))


def collate(rows: list[Seq2SeqRow], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Encoder inputs and decoder inputs padded on the right, with masks; the decoder reads
    the start token (pad, as T5) then its tokens shifted right; padding has no labels."""
    encoder_width = max(1, *(len(r.input_ids) for r in rows))
    decoder_width = max(1, *(len(r.decoder_ids) for r in rows))
    ids, mask, decoder_ids, decoder_mask, labels = [], [], [], [], []
    for row in rows:
        pad = encoder_width - len(row.input_ids)
        ids.append(row.input_ids + [pad_id] * pad)
        mask.append([1] * len(row.input_ids) + [0] * pad)
        n = len(row.decoder_ids)
        shifted = ([pad_id] + row.decoder_ids)[: max(n, 1)]  # T5 starts from the pad token
        decoder_ids.append(shifted + [pad_id] * (decoder_width - len(shifted)))
        decoder_mask.append([1] * n + [0] * (decoder_width - n))
        labels.append(row.labels + [IGNORE_INDEX] * (decoder_width - n))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {
        "input_ids": as_tensor(ids),
        "attention_mask": as_tensor(mask),
        "decoder_input_ids": as_tensor(decoder_ids),
        "decoder_attention_mask": as_tensor(decoder_mask),
        "labels": as_tensor(labels),
    }


def count_labels(rows: list[Seq2SeqRow]) -> int:
    # Labels line up with the decoder's outputs: no shift, every label counts.
    return sum(sum(label != IGNORE_INDEX for label in r.labels) for r in rows)


def generate(model, prompt: list[int], max_new_tokens: int, tokenizer) -> list[int]:
    """Greedy target for the prompt, which goes to the encoder: the decoder's tokens after its
    start token."""
    return greedy(model, prompt, max_new_tokens, tokenizer)[1:]


def export(model, tokenizer, staging: Path, hp: Hyperparameters) -> None:
    """adapter/ (the LoRA weights and the tokenizer) and, with merge_weights, merged/."""
    model_files.save_adapter(model, tokenizer, staging / ADAPTER)
    if hp.merge_weights:
        # Last: merging folds the adapter into the base weights in place.
        merged = model.merge_and_unload()
        model_files.save_merged(merged, tokenizer, staging / MERGED, hp.merged_dtype)


SEQ2SEQ_LM = MODELS.add(
    ModelFamily(
        name="seq2seq-lm",
        options=NoOptions,
        matches=matches,
        load=load,
        rows=rows,
        collate=collate,
        count_labels=count_labels,
        export=export,
        description="encoder-decoder models (Flan-T5): prompt to the encoder, loss on the target",
        generate=generate,
    )
)
