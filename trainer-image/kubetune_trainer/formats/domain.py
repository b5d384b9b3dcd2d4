"""`domain-adaptation`: one .csv/.json/.jsonl/.txt file of texts (the `text` column, else the
first), concatenated with EOS after each text and cut into blocks of max_length tokens;
the loss is on every token."""

import csv
import io
from pathlib import Path

from kubetune.api.v1alpha1 import Hyperparameters, PromptFormat
from kubetune_trainer.formats import FORMATS, Channels, DataFormat
from kubetune_trainer.formats.encoder import Encoder, effective_max_length, require_eos
from kubetune_trainer.formats.files import json_records, read_text, visible_files
from kubetune_trainer.formats.samples import DataError, Sample, Splits
from kubetune_trainer.formats.split import split_and_cap, splits
from kubetune_trainer.registry import NoOptions

DOMAIN_EXTENSIONS = (".csv", ".json", ".jsonl", ".txt")


def load(channels: Channels, hp: Hyperparameters, tokenizer, options: NoOptions) -> Splits:
    """Blocks of each channel; caps count blocks, as run_clm applies max_*_samples after
    grouping texts."""
    max_length = effective_max_length(hp, tokenizer)
    require_eos(tokenizer)
    with Encoder(tokenizer, hp.preprocessing_num_workers) as encoder:
        train = domain_blocks(channels.train, encoder, max_length)
        val = None
        if channels.validation:
            val = domain_blocks(channels.validation, encoder, max_length)
        train, val = split_and_cap(train, val, hp, channels.train)
        test = domain_blocks(channels.test, encoder, max_length) if channels.test else None
    prompt = PromptFormat(data_format="domain-adaptation")
    return splits(train, val, max_length, test, prompt)


def domain_blocks(folder: Path, encoder: Encoder, block_size: int) -> list[Sample]:
    files = visible_files(folder)
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
    for ids in encoder.encode(read_texts(path), add_special_tokens=True):
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


def read_texts(path: Path) -> list[str]:
    """Texts of a domain-adaptation file: the `text` column, else the first column."""
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [text]
    if suffix == ".csv":
        return _csv_texts(path, text)
    return _record_texts(path, json_records(path, text))


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


DOMAIN_ADAPTATION = FORMATS.add(
    DataFormat(
        name="domain-adaptation",
        options=NoOptions,
        load=load,
        description="one .csv, .json, .jsonl or .txt file of texts, cut into blocks",
    )
)
