"""A channel's files as text and JSON records: which files count, UTF-8 decoding, JSON lines
and JSON lists with bounds, and a JSON parser that refuses what no tokenizer could read.
"""

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from kubetune.api.safeload import MiB
from kubetune_trainer.formats.samples import DataError

MAX_RECORD_CHARS = 64 * MiB  # a JSON line; bounds what one record can make the parser build
# A \u escape of half a UTF-16 surrogate pair (a whole pair decodes to one character).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def visible_files(folder: Path) -> list[Path]:
    """Data files of a channel: a single file as given, else the folder's non-hidden files."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder")
    # Hidden names cover the download marker `.kubetune-complete` and OS litter (.DS_Store).
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8"
        ) from None


def json_lines(path: Path, text: str) -> Iterator[tuple[str, object]]:
    """("line N", value) for each non-blank line of a JSON lines file."""
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


def json_records(path: Path, text: str) -> list[tuple[str, object]]:
    """(where, value) for each record of a .jsonl file, or of a .json file holding one JSON
    list ("record N") or JSON lines ("line N"; one object is a one-line file)."""
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = parse_json(text)
        except json.JSONDecodeError as e:
            where = f"line {e.lineno}, column {e.colno}"
            raise DataError(f"{path}, {where}: invalid JSON ({e.msg})") from None
        except ValueError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
        return [(f"record {i}", r) for i, r in enumerate(records, start=1)]
    try:
        return list(json_lines(path, text))
    except DataError:
        if path.suffix.lower() == ".json" and is_json(text):  # valid, but over several lines
            raise DataError(
                f"{path}: one JSON value over several lines; a .json file holds a list of "
                "records ([{...}, ...]) or one record per line"
            ) from None
        raise


def is_json(text: str) -> bool:
    try:
        parse_json(text)
    except ValueError:
        return False
    return True


def parse_json(text: str, unique_keys: bool = False) -> object:
    """json.loads, refusing with ValueError what is valid JSON but no usable record: nesting
    deeper than Python's recursion limit, integers longer than Python reads, and \\u escapes
    of lone surrogates (not text: no tokenizer encodes them). Syntax errors stay
    json.JSONDecodeError, with their line and column. `unique_keys` refuses an object that
    names a key twice (for files people write by hand, as kubectl does for YAML)."""
    try:
        value = json.loads(text, object_pairs_hook=_unique if unique_keys else None)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (json.JSONDecodeError, DuplicateKey):
        raise
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
        raise ValueError(f"a number of more than {sys.get_int_max_str_digits()} digits") from None
    if SURROGATE_ESCAPE.search(text):  # rare: only then look at every string
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a \\u escape encodes half of a surrogate pair, not text") from None
    return value


class DuplicateKey(ValueError):
    """An object names a key twice (json.loads would keep the last silently)."""


def _unique(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) < len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise DuplicateKey(f"key {twice!r} appears twice in one object")
    return found
