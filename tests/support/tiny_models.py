"""The tiny tokenizers and models of kubetune.local.tiny_models, under the name tests import.

CPU tests load them with `from_pretrained(path)` like real hub models, with no hub access.
"""

from kubetune.local.tiny_models import (  # noqa: F401
    SPECIAL_TOKENS,
    T5_SPECIAL_TOKENS,
    build_tiny_llama,
    build_tiny_t5,
    build_tokenizer,
    build_word_tokenizer,
)
