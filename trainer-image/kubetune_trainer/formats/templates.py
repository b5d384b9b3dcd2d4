"""Instruction templates (JumpStart's template.json) read from the train channel; parsing and
filling are kubetune.api.templates, shared with `kubetune generate`."""

import json
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import templates
from kubetune.api.safeload import TEMPLATE, LoadError, read_bounded
from kubetune.api.templates import DEFAULT_COMPLETION, DEFAULT_PROMPT, Parts, TemplateError
from kubetune_trainer.formats.files import parse_json
from kubetune_trainer.formats.samples import DataError

__all__ = ["DEFAULT_COMPLETION", "DEFAULT_PROMPT", "TEMPLATE_FILE", "Template", "load_template"]

TEMPLATE_FILE = "template.json"


@dataclass(frozen=True)
class Template:
    prompt: Parts
    completion: Parts
    path: Path | None  # None: a default template
    # The format strings as written: what the artifacts record for `kubetune generate`.
    prompt_text: str = ""
    completion_text: str = ""

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the default template"

    def render(self, record: dict, where: str) -> tuple[str, str]:
        """(prompt, completion) for one record; `where` ("file, line N") goes into errors."""
        try:
            prompt = templates.fill(self.prompt, record, where, self.source)
            return prompt, templates.fill(self.completion, record, where, self.source)
        except TemplateError as err:
            raise DataError(str(err)) from None


def load_template(folder: Path, default: tuple[str, str] = (DEFAULT_PROMPT, DEFAULT_COMPLETION)):
    """The folder's template.json, else `default` (prompt, completion): JumpStart's."""
    path = folder / TEMPLATE_FILE
    if not path.is_file():
        return template_of(*default, path=None, source="default")
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
    return template_of(spec["prompt"], spec["completion"], path=path, source=f"{path}:")


def template_of(prompt: str, completion: str, path: Path | None, source: str) -> Template:
    return Template(
        prompt=parse_format(prompt, f"{source} prompt"),
        completion=parse_format(completion, f"{source} completion"),
        path=path,
        prompt_text=prompt,
        completion_text=completion,
    )


def parse_format(text: str, source: str) -> Parts:
    try:
        return templates.parse_format(text, source)
    except TemplateError as err:
        raise DataError(str(err)) from None
