"""Tokenization for every format: the sample length limit and a batch encoder that runs in a
pool of processes when preprocessing_num_workers is set (same ids either way)."""

import math
import multiprocessing

from kubetune.api.v1alpha1 import Hyperparameters

# Tokenizers without a recorded limit report int(1e30) (transformers' VERY_LARGE_INTEGER).
NO_LIMIT = 10**18


def effective_max_length(hp: Hyperparameters, tokenizer) -> int:
    """Tokens per sample: -1 means min(1024, tokenizer max), else min(value, tokenizer max)."""
    model_max = tokenizer.model_max_length
    if model_max is None or model_max >= NO_LIMIT:
        model_max = NO_LIMIT
    wanted = 1024 if hp.max_input_length == -1 else hp.max_input_length
    return min(wanted, model_max)


def require_eos(tokenizer) -> None:
    """Formats that end each sample with EOS need one."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: samples could not mark their end")


class Encoder:
    """Batch tokenizer, in a pool of `workers` processes when set; same ids either way."""

    def __init__(self, tokenizer, workers: int | None):
        self.tokenizer = tokenizer
        self.workers = workers
        self._pool = None

    def __enter__(self) -> "Encoder":
        if self.workers:
            # spawn, not fork: the trainer may already run threads (torch, gloo, tokenizers),
            # and forking a threaded process can deadlock.
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(
                self.workers, initializer=_init_worker, initargs=(self.tokenizer,)
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def encode(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        # A few chunks per worker balance load; 1,000 texts bound a chunk's memory.
        size = min(1000, math.ceil(len(texts) / (4 * (self.workers or 1))))
        chunks = [(texts[i : i + size], add_special_tokens) for i in range(0, len(texts), size)]
        if self._pool is not None:
            results = self._pool.map(_encode_in_worker, chunks)  # map keeps the order
        else:
            results = [_encode(self.tokenizer, *chunk) for chunk in chunks]
        return [ids for chunk in results for ids in chunk]


_worker_tokenizer = None  # set once per pool process: the tokenizer is pickled once, not per chunk


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_in_worker(chunk: tuple[list[str], bool]) -> list[list[int]]:
    return _encode(_worker_tokenizer, *chunk)


def _encode(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    # verbose=False: long documents are expected here; blocks are cut afterwards.
    return tokenizer(texts, add_special_tokens=add_special_tokens, verbose=False)["input_ids"]
