"""Instruction templates (JumpStart's template.json) and the safe formatter that fills them."""

import json
import string
from dataclasses import dataclass
from pathlib import Path

from kubetune.api.safeload import TEMPLATE, LoadError, read_bounded
from kubetune_trainer.formats.files import parse_json
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
