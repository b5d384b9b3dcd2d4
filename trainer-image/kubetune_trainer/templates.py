"""Instruction templates (JumpStart's template.json) and the safe formatter that fills them.

Also home of `DataError`, so that this leaf module and `data` raise the same error; import
both from `kubetune_trainer.data`.
"""

import json
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path

from kubetune.api.safeload import TEMPLATE, LoadError, read_bounded
from kubetune_trainer.formats.samples import DataError

TEMPLATE_FILE = "template.json"

# JumpStart's default instruction template (Dolly-style records: instruction, context,
# response), used when the training folder has no template.json.
DEFAULT_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n"
)
DEFAULT_COMPLETION = " {response}"

# A template is literal text interleaved with record field names (None: literal only).
Parts = list[tuple[str, str | None]]
# A \u escape of half a UTF-16 surrogate pair (a whole pair decodes to one character).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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


@dataclass(frozen=True)
class Template:
    prompt: Parts
    completion: Parts
    path: Path | None  # None: the default template

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the default template"

    def render(self, record: dict, where: str) -> tuple[str, str]:
        """(prompt, completion) for one record; `where` ("file, line N") goes into errors."""
        return self._fill(self.prompt, record, where), self._fill(self.completion, record, where)

    def _fill(self, parts: Parts, record: dict, where: str) -> str:
        # Plain dictionary lookups, never str.format: a record cannot reach any attribute.
        out = []
        for literal, field in parts:
            out.append(literal)
            if field is None:
                continue
            if field not in record:
                raise DataError(
                    f"{where}: field {field!r} used by {self.source} is missing from the record"
                )
            value = record[field]
            out.append("" if value is None else str(value))
        return "".join(out)


def load_template(folder: Path) -> Template:
    """The folder's template.json, else JumpStart's default template."""
    path = folder / TEMPLATE_FILE
    if not path.is_file():
        return Template(
            prompt=parse_format(DEFAULT_PROMPT, "default prompt"),
            completion=parse_format(DEFAULT_COMPLETION, "default completion"),
            path=None,
        )
    try:
        spec = parse_json(read_bounded(path, TEMPLATE), unique_keys=True)
    except LoadError as e:
        raise DataError(f"{path}: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or not all(
        isinstance(spec.get(key), str) for key in ("prompt", "completion")
    ):
        raise DataError(f"{path}: needs a JSON object with string fields 'prompt' and 'completion'")
    return Template(
        prompt=parse_format(spec["prompt"], f"{path}: prompt"),
        completion=parse_format(spec["completion"], f"{path}: completion"),
        path=path,
    )


def parse_format(text: str, source: str) -> Parts:
    """Split a format string into parts, refusing anything but `{plain_field_name}`.

    Attribute and index lookups (`{x.__class__}`, `{x[0]}`), positional fields (`{0}`, `{}`),
    conversions (`{x!r}`) and format specs (`{x:>9}`, which may nest fields) are refused:
    str.format on them could expose object internals, and a template has no need for them.
    """
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as e:
        reason = f"invalid format string ({e}); write {{{{ and }}}} for literal braces"
        raise DataError(f"{source}: {reason}") from None
    parts: Parts = []
    for literal, field, spec, conversion in pieces:
        if field is not None and (not field.isidentifier() or spec or conversion):
            placeholder = "{" + field + (f"!{conversion}" if conversion else "")
            placeholder += (f":{spec}" if spec else "") + "}"
            raise DataError(
                f"{source}: unsafe placeholder {placeholder}; only plain field names such as "
                "{instruction} are allowed"
            )
        parts.append((literal, field))
    return parts
