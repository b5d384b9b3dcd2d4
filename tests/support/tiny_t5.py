"""A tiny Flan-T5-shaped model and tokenizer built on the fly, saved in Hugging Face layout.

Like T5's: pad 0 (also the decoder's start token), eos 1, unk 2, no BOS, and every encoded
text ends with `</s>`. Gated-GELU feed-forward and untied embeddings, as Flan-T5.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5's vocabulary


def build_t5_tokenizer(
    texts: Iterable[str], path: Path, *, vocab_size: int = 400, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` that appends `</s>`, saved to `path`."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=T5_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    eos_id = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        model_max_length=model_max_length,
    )
    wrapped.save_pretrained(path)
    return wrapped


def build_tiny_t5(
    path: Path, tokenizer: PreTrainedTokenizerFast, **config_overrides
) -> T5ForConditionalGeneration:
    """Save a 2+2-layer, d_model-64 T5ForConditionalGeneration and `tokenizer` to `path`; the
    same weights each call."""
    settings = {
        "vocab_size": len(tokenizer),
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 128,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    config = T5Config(**{**settings, **config_overrides})
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return model
