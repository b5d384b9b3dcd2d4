"""Tiny tokenizer and Llama model built on the fly, saved in Hugging Face layout.

CPU tests load them with `from_pretrained(path)` like real hub models, with no hub access.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Ids follow the order of this list: unk 0, pad 1, bos 2, eos 3.
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>"]


def build_tokenizer(
    texts: Iterable[str],
    path: Path,
    *,
    vocab_size: int = 400,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and save it to `path`.

    Byte-level, so any text encodes (no unknown tokens); it prepends `<s>` like Llama's.
    Load it back with `AutoTokenizer.from_pretrained(path)`, the trainer's real path.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=model_max_length,
    )
    wrapped.save_pretrained(path)
    return wrapped


def build_tiny_llama(
    path: Path,
    vocab_size: int,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    **config_overrides,
) -> LlamaForCausalLM:
    """Save a 2-layer, hidden-64 LlamaForCausalLM (safetensors) to `path`; same weights each call.

    With `tokenizer`, its special-token ids go into the config and it is saved alongside, so
    `path` is a complete model folder as a ModelHub `source` holds one.
    """
    ids = {"unk": 0, "pad": 1, "bos": 2, "eos": 3}
    if tokenizer is not None:
        ids = {
            "pad": tokenizer.pad_token_id,
            "bos": tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id,
        }
        vocab_size = max(vocab_size, len(tokenizer))
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        tie_word_embeddings=False,
        **config_overrides,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model
