"""Read kubetune manifests from YAML and judge them as the API server would.

YAML is read within bounds (`safeload`: size, depth, aliases, duplicate keys), nulls are
pruned (the API server drops nulls of non-nullable fields), then the pydantic types decide.
Every problem is one line: `FILE: Kind/NAME: field.path: value: rule`.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kubetune.api.safeload import MANIFEST, LoadError, load_yaml_all, read_bounded
from kubetune.api.v1alpha1 import API_VERSION, KINDS
from kubetune.api.v1alpha1.common import PATTERN_RULES


@dataclass
class Document:
    """One YAML document of a file, as loaded (or the reason it could not be)."""

    source: str
    index: int
    body: Any = None
    error: str | None = None

    @property
    def label(self) -> str:
        """`Kind/name` when the document says, else its position in the file."""
        if isinstance(self.body, dict) and isinstance(self.body.get("kind"), str):
            metadata = self.body.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            return f"{self.body['kind']}/{name or '<no name>'}"
        return f"document {self.index + 1}"


def read_documents(source: str, text: str) -> Iterator[Document]:
    """Every non-empty document of a multi-document YAML text; a syntax error or a limit ends
    the file (nothing of a file over a limit is built)."""
    index, found = 0, 0
    try:
        for body in load_yaml_all(text, MANIFEST):
            if body is not None:
                found += 1
                yield Document(source, index, body)
            index += 1
    except LoadError as err:
        yield Document(source, index, error=str(err))
        return
    if not found:
        yield Document(source, 0, error="no objects in this file")


def read_file(path: Path) -> Iterator[Document]:
    try:
        text = read_bounded(path, MANIFEST)
    except LoadError as err:
        yield Document(str(path), 0, error=str(err))
        return
    except (OSError, UnicodeDecodeError) as err:
        yield Document(str(path), 0, error=f"cannot read: {getattr(err, 'strerror', None) or err}")
        return
    yield from read_documents(str(path), text)


def prune_nulls(value: Any) -> Any:
    """Drop null object fields, as the API server does for non-nullable fields."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def kind_of(body: Any) -> type[BaseModel] | None:
    if isinstance(body, dict) and body.get("apiVersion") == API_VERSION:
        return KINDS.get(body.get("kind"))
    return None


def problems(doc: Document) -> list[str]:
    """What is wrong with one document, as field-path lines (empty when valid)."""
    if doc.error:
        return [doc.error]
    if not isinstance(doc.body, dict):
        return [f"expected a Kubernetes object (a mapping), got {type(doc.body).__name__}"]
    model = kind_of(doc.body)
    if model is None:
        kinds = " or ".join(KINDS)
        return [
            f"apiVersion {doc.body.get('apiVersion')!r}, kind {doc.body.get('kind')!r} is not a "
            f"kubetune kind (expected {kinds} in {API_VERSION})"
        ]
    found = []
    metadata = doc.body.get("metadata")
    if not isinstance(metadata, dict) or not (metadata.get("name") or metadata.get("generateName")):
        found.append("metadata.name: required field is missing")
    try:
        model.model_validate(prune_nulls(doc.body))
    except ValidationError as err:
        found += describe_all(err.errors())
    return found


def describe_all(errors: list[dict[str, Any]]) -> list[str]:
    """Each pydantic error as a line; for int-or-string unions, only the branch the value took."""
    lines: list[str] = []
    union_lines: dict[str, int] = {}  # "path: value" of a value no branch took -> its line
    for error in errors:
        branches = [p for p in error["loc"] if _is_union_branch(p)]
        value = error.get("input")
        took = "str" if isinstance(value, str) else "int" if type(value) is int else None
        if branches and took and not branches[0].endswith(took):
            continue
        line = describe(error)
        head, _, rule = line.rpartition(": ")
        if branches and head in union_lines:  # one line: "must be an integer or a string"
            i = union_lines[head]
            if rule not in lines[i]:
                lines[i] += " or " + rule.removeprefix("must be ")
            continue
        if branches:
            union_lines[head] = len(lines)
        lines.append(line)
    return list(dict.fromkeys(lines))


def describe(error: dict[str, Any]) -> str:
    """One pydantic error as `field.path: value: rule` (list items as `models[1]`)."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_branch(part):
            path += f".{part}" if path else str(part)
    rule = _rule(error)
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden") or isinstance(value, dict | list):
        return f"{path}: {rule}" if path else rule
    return f"{path}: {_show(value)}: {rule}" if path else f"{_show(value)}: {rule}"


def _rule(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    fixed = {
        "missing": "required field is missing",
        "extra_forbidden": "unknown field",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "bool_type": "must be a boolean (true or false)",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "string_pattern_mismatch":
        return PATTERN_RULES.get(ctx.get("pattern"), f"must match {ctx.get('pattern')}")
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        # pydantic reports `lt=1` on a float field as 1.0; users wrote 1.
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"must be {bounds[kind]} {limit}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("string_too_long", "too_long"):
        return f"must have at most {ctx.get('max_length')} {_unit(kind)}"
    if kind in ("string_too_short", "too_short"):
        return f"must have at least {ctx.get('min_length')} {_unit(kind)}"
    return error["msg"]


def _unit(kind: str) -> str:
    return "characters" if kind.startswith("string") else "items"


def _is_union_branch(part: Any) -> bool:
    """pydantic names union branches in locations (`int`, `constrained-str`): not fields."""
    return isinstance(part, str) and (
        part in ("int", "str", "function-after[check()]")
        or part.startswith(("constrained-", "function-"))
    )


def _show(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else yaml.safe_dump(value).strip().removesuffix("\n...")
    )
