"""Tiny tokenizers and models with random weights, saved in Hugging Face layout: what the demo,
the CPU tests and the benches train, loaded by `from_pretrained(path)` like a hub model, with
no hub access. Needs the trainer extra (torch, transformers, tokenizers), imported inside each
function: `kubetune.demo --data-only` and the operator never pay for them, and operator code
never imports this module.

Each builder gives the same files on every call: vocabularies follow the texts, weights come
from seed 0.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

# Llama's special tokens; ids follow this order: unk 0, pad 1, bos 2, eos 3.
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>"]
# T5's, in T5's order: pad 0, eos 1, unk 2; no bos (the decoder starts from pad).
T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
SEED = 0
# 2 layers x (attention 64 x (64+32+32+64) + MLP 3 x 64 x 128) = 0.07 M, plus embedding and
# head 2 x vocab x 64: small enough that a CPU test trains it in seconds.
LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
# Shaped as flan-t5 (gated-GELU MLP, untied head), shrunk: 2 encoder and 2 decoder layers of
# d_model 64, 4 heads of 16. T5's initializer_factor 1.0 draws the head at std 1: random logits
# of std ~8 (sqrt(64)) and a loss of ~30 per token. At 0.3 the loss starts about 1 above
# ln(vocab), and LoRA on the attention alone lowers it (6.6 -> 2.4 in 30 steps on one pair).
T5 = {
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "initializer_factor": 0.3,
}


def build_tokenizer(
    texts: Iterable[str],
    path: Path,
    *,
    vocab_size: int = 400,
    model_max_length: int = 2048,
    style: Literal["llama", "t5"] = "llama",
):
    """Train a byte-level BPE tokenizer on `texts` and save it to `path`.

    Byte-level, so any text encodes (no unknown tokens). `style="llama"` prepends `<s>` like
    Llama's; `style="t5"` appends `</s>` and adds no bos, like T5's. Load it back with
    `AutoTokenizer.from_pretrained(path)`, the trainer's real path.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = T5_SPECIAL_TOKENS if style == "t5" else SPECIAL_TOKENS
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    if style == "t5":
        eos = ("</s>", tokenizer.token_to_id("</s>"))
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos]
        )
        specials_kw = {"eos_token": "</s>"}
    else:
        bos = ("<s>", tokenizer.token_to_id("<s>"))
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[bos]
        )
        specials_kw = {"bos_token": "<s>", "eos_token": "</s>"}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        **specials_kw,
    )
    wrapped.save_pretrained(path)
    return wrapped


def build_word_tokenizer(path: Path, *, vocab_size: int, model_max_length: int):
    """One token per whitespace-separated word "w0".."wN" (ids 4..vocab_size-1 after Llama's
    special tokens), so a text's token count is exact; prepends `<s>` like Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": len(SPECIAL_TOKENS) + i for i in range(vocab_size - len(vocab))})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
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


def build_tiny_llama(path: Path, vocab_size: int, *, tokenizer=None, **overrides):
    """Save a LlamaForCausalLM (safetensors) to `path`: LLAMA's shape unless `overrides` (any
    LlamaConfig field) say otherwise; the same weights each call.

    With `tokenizer`, its special-token ids go into the config and it is saved alongside, so
    `path` is a complete model folder as a ModelHub `source` holds one.
    """
    from transformers import LlamaConfig
    from transformers.utils import logging

    logging.disable_progress_bar()  # one small shard: a progress bar is noise
    ids = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3}
    if tokenizer is not None:
        ids = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        vocab_size = max(vocab_size, len(tokenizer))
    config = LlamaConfig(vocab_size=vocab_size, **ids, **{**LLAMA, **overrides})
    model = random_llama(config)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model


def random_llama(config, *, device=None, dtype=None, attn_implementation=None):
    """A LlamaForCausalLM of `config` with seed-0 random weights, built on `device` (no detour
    through host memory for a large one on a GPU)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(SEED)
    with torch.device(device or "cpu"):
        return LlamaForCausalLM._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )


def build_tiny_t5(path: Path, vocab_size: int, tokenizer=None, **overrides):
    """Save a T5ForConditionalGeneration (safetensors) to `path`: T5's shape unless `overrides`
    (any T5Config field) say otherwise; the same weights each call. The decoder starts from
    the pad token, as T5's does.

    With `tokenizer` (build_tokenizer(..., style="t5")), its ids go into the config and it is
    saved alongside: AutoTokenizer and AutoModelForSeq2SeqLM load `path`.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    from transformers.utils import logging

    logging.disable_progress_bar()
    pad, eos = 0, 1
    if tokenizer is not None:
        pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
        vocab_size = max(vocab_size, len(tokenizer))
    ids = {"pad_token_id": pad, "eos_token_id": eos, "decoder_start_token_id": pad}
    config = T5Config(vocab_size=vocab_size, **{**ids, **T5, **overrides})
    torch.manual_seed(SEED)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model
