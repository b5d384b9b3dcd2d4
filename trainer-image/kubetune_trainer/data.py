"""Turn downloaded data folders into tokenized samples, in the SageMaker JumpStart formats.

Domain adaptation cuts one .csv/.json/.jsonl/.txt file into blocks of tokens; instruction
tuning renders .jsonl records through a prompt/completion template (see `templates`). Every
data problem raises `DataError`, naming the file and the reason, before any training starts.
"""

import csv
import io
import json
import logging
import math
import multiprocessing
import random
from collections.abc import Iterator
from pathlib import Path

from kubetune.api.safeload import MiB
from kubetune.api.v1alpha1.hyperparameters import Hyperparameters
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits
from kubetune_trainer.templates import (
    TEMPLATE_FILE,
    Template,
    load_template,
    parse_json,
)

__all__ = ["DataError", "IGNORE_INDEX", "Sample", "Splits", "effective_max_length", "load_splits"]

log = logging.getLogger(__name__)

DOMAIN_EXTENSIONS = (".csv", ".json", ".jsonl", ".txt")
MAX_RECORD_CHARS = 64 * MiB  # a JSON line; bounds what one record can make the parser build
# Tokenizers without a recorded limit report int(1e30) (transformers' VERY_LARGE_INTEGER).
NO_LIMIT = 10**18


def effective_max_length(hp: Hyperparameters, tokenizer) -> int:
    """Tokens per sample: -1 means min(1024, tokenizer max), else min(value, tokenizer max)."""
    model_max = tokenizer.model_max_length
    if model_max is None or model_max >= NO_LIMIT:
        model_max = NO_LIMIT
    wanted = 1024 if hp.max_input_length == -1 else hp.max_input_length
    return min(wanted, model_max)


def load_splits(
    train_dir: Path, validation_dir: Path | None, hp: Hyperparameters, tokenizer
) -> Splits:
    """Read, tokenize and split the data; max_train/val_samples cap what each split keeps."""
    max_length = effective_max_length(hp, tokenizer)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: samples could not mark their end")
    with _Encoder(tokenizer, hp.preprocessing_num_workers) as encoder:
        if hp.instruction_tuned:
            # Caps count records (the user's unit); the split happens before tokenization too.
            template = load_template(Path(train_dir))
            train = _instruction_pairs(Path(train_dir), template)
            val = _instruction_pairs(Path(validation_dir), template) if validation_dir else None
            train, val = _split_and_cap(train, val, hp, train_dir)
            train = _instruction_samples(train, encoder, max_length, f"{train_dir}")
            val = _instruction_samples(val, encoder, max_length, f"{validation_dir or train_dir}")
        else:
            # Caps count blocks, as run_clm applies max_*_samples after grouping texts.
            train = _domain_blocks(Path(train_dir), encoder, max_length)
            val = None
            if validation_dir:
                val = _domain_blocks(Path(validation_dir), encoder, max_length)
            train, val = _split_and_cap(train, val, hp, train_dir)
    log.info(
        "data: %d train, %d validation samples (<= %d tokens)", len(train), len(val), max_length
    )
    return Splits(train=train, validation=val, max_length=max_length)


# --- files -------------------------------------------------------------------------------


def _visible_files(folder: Path) -> list[Path]:
    """Data files of a channel: a single file as given, else the folder's non-hidden files."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder")
    # Hidden names cover the download marker `.kubetune-complete` and OS litter (.DS_Store).
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8"
        ) from None


def _json_lines(path: Path, text: str) -> Iterator[tuple[str, object]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_RECORD_CHARS:  # one record, not a file pasted onto one line
            raise DataError(
                f"{path}, line {number}: a record of {len(line) / MiB:.0f} MiB is over the "
                f"{MAX_RECORD_CHARS // MiB} MiB limit for one JSON line"
            )
        if line.strip():
            try:
                yield f"line {number}", parse_json(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {number}: invalid JSON ({e.msg})") from None
            except ValueError as e:
                raise DataError(f"{path}, line {number}: invalid JSON ({e})") from None


# --- domain adaptation -------------------------------------------------------------------


def _domain_blocks(folder: Path, encoder: "_Encoder", block_size: int) -> list[Sample]:
    files = _visible_files(folder)
    if not files:
        raise DataError(f"{folder}: no data file (expected one .csv, .json, .jsonl or .txt file)")
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise DataError(f"{folder}: several data files ({names}); domain adaptation reads one")
    path = files[0]
    if path.suffix.lower() not in DOMAIN_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            "domain adaptation reads .csv, .json, .jsonl or .txt"
        )
    stream: list[int] = []
    eos = encoder.tokenizer.eos_token_id
    for ids in encoder.encode(_read_texts(path), add_special_tokens=True):
        # EOS after each document so the model learns where documents end.
        stream.extend(ids if ids[-1:] == [eos] else [*ids, eos])
    # Like run_clm's group_texts: equal blocks, the short tail is dropped.
    count = len(stream) // block_size
    if count == 0:
        raise DataError(
            f"{path}: {len(stream)} tokens, fewer than one block of {block_size} tokens "
            "(max_input_length); add text or lower max_input_length"
        )
    blocks = (stream[i * block_size : (i + 1) * block_size] for i in range(count))
    return [Sample(input_ids=block, labels=list(block)) for block in blocks]


def _read_texts(path: Path) -> list[str]:
    """Texts of a domain-adaptation file: the `text` column, else the first column."""
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [text]
    if suffix == ".csv":
        return _csv_texts(path, text)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = [(f"record {i}", r) for i, r in enumerate(parse_json(text), start=1)]
        except json.JSONDecodeError as e:
            where = f"line {e.lineno}, column {e.colno}"
            raise DataError(f"{path}, {where}: invalid JSON ({e.msg})") from None
        except ValueError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
    else:  # .jsonl, and .json holding JSON lines (one object is a one-line file)
        try:
            records = list(_json_lines(path, text))
        except DataError:
            if suffix == ".json" and _is_json(text):  # valid, but one value over several lines
                raise DataError(
                    f"{path}: one JSON value over several lines; a .json file holds a list of "
                    "records ([{...}, ...]) or one record per line"
                ) from None
            raise
    return _record_texts(path, records)


def _is_json(text: str) -> bool:
    try:
        parse_json(text)
    except ValueError:
        return False
    return True


def _csv_texts(path: Path, text: str) -> list[str]:
    # Whole documents can sit in one cell: lift csv's 128 KiB default field limit.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if not any(header):
            raise DataError(f"{path}: no usable column: the header row is empty")
        column = header.index("text") if "text" in header else 0
        texts, rows = [], 0
        for row in reader:
            rows += 1
            # Rows without a value in the column add no text; not worth failing for, unless
            # no row has one (a ragged file, or the wrong column).
            if len(row) > column and row[column]:
                texts.append(row[column])
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: invalid CSV ({e})") from None
    if not texts:
        raise DataError(
            f"{path}: no text: none of its {rows} rows has a value in column {header[column]!r}"
        )
    return texts


def _record_texts(path: Path, records: list[tuple[str, object]]) -> list[str]:
    if not records:
        raise DataError(f"{path}: no records")
    first = records[0][1]
    column = None
    if isinstance(first, dict):
        if not first:
            raise DataError(f"{path}: no usable column: the first record has no fields")
        column = "text" if "text" in first else next(iter(first))
    texts = []
    for where, record in records:
        if column is None and isinstance(record, str):
            texts.append(record)
            continue
        if column is None or not isinstance(record, dict):
            kind = type(record).__name__
            raise DataError(
                f"{path}, {where}: no usable column: records must be all JSON objects or all "
                f"strings, got {kind}"
            )
        value = record.get(column)
        if value is not None and not isinstance(value, str):
            kind = type(value).__name__
            raise DataError(f"{path}, {where}: field {column!r} must be a string, got {kind}")
        if value:
            texts.append(value)
    if not texts:
        what = f"has a value in field {column!r}" if column else "is a non-empty string"
        raise DataError(f"{path}: no text: none of its {len(records)} records {what}")
    return texts


# --- instruction tuning ------------------------------------------------------------------


def _instruction_pairs(folder: Path, template: Template) -> list[tuple[str, str]]:
    """(prompt, completion) strings of every record in the folder's .jsonl files, in order."""
    files = _visible_files(folder)
    others = [p.name for p in files if p.suffix.lower() != ".jsonl" and p.name != TEMPLATE_FILE]
    if others:
        raise DataError(
            f"{folder}: unsupported file(s) {', '.join(others)}; instruction tuning reads "
            f".jsonl files and an optional {TEMPLATE_FILE}"
        )
    jsonl = [p for p in files if p.suffix.lower() == ".jsonl"]
    if not jsonl:
        raise DataError(f"{folder}: no data file (instruction tuning expects .jsonl files)")
    own_template = folder / TEMPLATE_FILE
    if own_template.is_file() and own_template != template.path:
        # The model is evaluated in the format it is trained in: the train channel's template.
        log.warning("%s: ignored; the training channel's template applies", own_template)
    pairs = []
    for path in jsonl:
        for where, record in _json_lines(path, _read_text(path)):
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise DataError(f"{path}, {where}: expected a JSON object, got {kind}")
            pairs.append(template.render(record, f"{path}, {where}"))
    return pairs


def _instruction_samples(
    pairs: list[tuple[str, str]], encoder: "_Encoder", max_length: int, source: str
) -> list[Sample]:
    # Encoded apart so the prompt/completion boundary is exact; only the prompt gets BOS.
    prompts = encoder.encode([p for p, _ in pairs], add_special_tokens=True)
    completions = encoder.encode([c for _, c in pairs], add_special_tokens=False)
    eos = encoder.tokenizer.eos_token_id
    samples, dropped, truncated = [], 0, 0
    for prompt, completion in zip(prompts, completions, strict=True):
        if len(prompt) >= max_length:  # no room left for a single completion token
            dropped += 1
            continue
        full = prompt + completion + [eos]
        truncated += len(full) > max_length
        input_ids = full[:max_length]
        labels = [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt) :]
        samples.append(Sample(input_ids=input_ids, labels=labels))
    if dropped or truncated:
        log.warning(
            "%s: %d of %d samples dropped (prompt of %d tokens or more), %d truncated to %d "
            "tokens (max_input_length)",
            source, dropped, len(pairs), max_length, truncated, max_length,
        )  # fmt: skip
    if not samples:
        raise DataError(
            f"{source}: no sample left: all {len(pairs)} records have a prompt of {max_length} "
            "tokens or more (max_input_length)"
        )
    return samples


# --- split and caps ----------------------------------------------------------------------


def _split_and_cap(train: list, val: list | None, hp: Hyperparameters, train_dir: Path) -> tuple:
    if val is None:
        # Like datasets' train_test_split: ceil(n * ratio) held out, at least one each side.
        n = len(train)
        if n < 2:
            raise DataError(
                f"{train_dir}: {n} sample(s) cannot be split into train and validation "
                "(validation_split_ratio); add data or give a validation channel"
            )
        n_val = min(n - 1, math.ceil(n * hp.validation_split_ratio))
        order = list(range(n))
        random.Random(hp.train_data_split_seed).shuffle(order)
        # Each side keeps file order: the split only chooses which samples go where.
        val_idx = set(order[:n_val])
        train, val = (
            [s for i, s in enumerate(train) if i not in val_idx],
            [s for i, s in enumerate(train) if i in val_idx],
        )
    return _cap(train, hp.max_train_samples), _cap(val, hp.max_val_samples)


def _cap(items: list, limit: int) -> list:
    return items if limit == -1 else items[:limit]


# --- tokenization ------------------------------------------------------------------------


class _Encoder:
    """Batch tokenizer, in a pool of `workers` processes when set; same ids either way."""

    def __init__(self, tokenizer, workers: int | None):
        self.tokenizer = tokenizer
        self.workers = workers
        self._pool = None

    def __enter__(self) -> "_Encoder":
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
