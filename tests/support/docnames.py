"""Names the docs use and names that exist. From the docs' code (fenced blocks and `spans`):
kubetune command lines, make targets, chart value paths, operator-config keys. From the
project: the CLI's argparse parser, the Makefile, the chart's values and schema, OperatorConfig.
"""

import itertools
import json
import re
from pathlib import Path
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
# A command starts a line, follows a shell separator, a prompt or a comment's `#`, or a bin/.
COMMAND = re.compile(
    r"(?:^|(?<=[|;&(#$])|(?<=bin/))[ \t]*(kubetune|make)[ \t]+(?=[a-z-])([^\n|;&#>]*)", re.M
)
SET = re.compile(r"--set(?:-string)?[= ](\S+?)=")
NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")  # `key` or `a.b.key`
DOTTED = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)+")
CAMEL = re.compile(r"[a-z][a-z0-9]*[A-Z]\w*(?:\.[\w-]+)*")
FILE_NAME = re.compile(r"\.(json|ya?ml|txt|md|tpl|png|csv|py|lua|sh|toml)$")
CHART_MENTION = re.compile(r"chart(?:'s|\s+values?)\s+`([^`]+)`")


# --- what the docs say ------------------------------------------------------------------------


def fences(text: str, language: str | None = None) -> list[str]:
    """The fenced blocks of a Markdown text (of one language, if given)."""
    return [body for lang, body in FENCE.findall(text) if language in (None, lang)]


def spans(text: str) -> list[str]:
    """The inline code of a Markdown text outside its fenced blocks, whitespace joined."""
    return [" ".join(span.split()) for span in SPAN.findall(FENCE.sub("", text))]


def code_of(path: Path) -> list[str]:
    """The code in a doc: fenced blocks and inline spans of Markdown, the comments of a YAML
    file, the indented lines (commands) and spans of a NOTES.txt."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        return [line.partition("#")[2] for line in text.splitlines() if "#" in line]
    if path.suffix == ".md":
        return fences(text) + spans(text)
    return [line for line in text.splitlines() if line.startswith(" ")] + spans(text)


def commands(code: str, program: str) -> list[list[str]]:
    """`program ARGS` lines in code, as words: backslash continuations and the `[...]`
    continuation lines of a usage synopsis joined, `a | b` alternatives inside brackets kept."""
    code = re.sub(r"\\\n|\n\s+(?=\[)", " ", code)
    code = re.sub(r"\[[^\]\n]*\]", lambda m: m.group(0).replace("|", " "), code)
    return [rest.split() for name, rest in COMMAND.findall(code) if name == program]


def flags(words: list[str]) -> list[str]:
    """The options among a command's words: `--name`, `--name=value`, `-x`, inside `[...]`."""
    found = (w.strip("[](),.").partition("=")[0] for w in words)
    return [w for w in found if re.fullmatch(r"-[A-Za-z]|--[a-z][\w-]*", w)]


def names(spans: list[str], pattern: re.Pattern) -> list[str]:
    """The names spans give (`key`, `key: value`, `key=value`) that match pattern; file names
    such as `metrics.json` are not names."""
    found = (re.split(r"[:=\s]", span.strip(), maxsplit=1)[0] for span in spans)
    return [n for n in found if pattern.fullmatch(n) and not FILE_NAME.search(n)]


def value_path(name: str) -> tuple:
    """`a.b\\.c` -> ("a", "b.c"): Helm's --set escapes dots inside a key."""
    return tuple(part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", name))


def yaml_paths(data, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a YAML mapping, as tuples (a key may hold dots: `g5.12xlarge`)."""
    if not isinstance(data, dict) or not data:
        return [prefix] if prefix else []
    return [p for key, value in data.items() for p in yaml_paths(value, (*prefix, str(key)))]


def section(text: str, heading: str) -> str:
    """A Markdown `## heading` section, up to the next `## `."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def without_table(text: str, header: str) -> str:
    """The text less the Markdown table whose header row starts with `header`."""
    if header not in text:
        return text
    start = text.index(header)
    end = text.find("\n\n", start)
    return text[:start] + (text[end:] if end != -1 else "")


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with `header`, as cells."""
    assert header in text, f"no table with the header {header}"
    lines = text[text.index(header) :].splitlines()[2:]  # after the header and |---| rows
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines)
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


# --- what exists --------------------------------------------------------------------------------


def subcommands(parser) -> dict:
    """Subcommand name -> its parser, plus "" -> the top-level parser."""
    (action,) = [a for a in parser._actions if a.choices and hasattr(a, "add_parser")]
    return {"": parser, **action.choices}


def make_targets() -> set[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    heads = (m.group(1) for m in map(re.compile(r"([\w. -]+?)\s*:(?!=)").match, lines) if m)
    return {t for head in heads for t in head.split() if not t.startswith(".")}


def chart_top_keys() -> set[str]:
    return set(yaml.safe_load((CHART / "values.yaml").read_text()))


def chart_allows(path: tuple, node: dict | None = None, root: dict | None = None) -> bool:
    """Whether values.schema.json (additionalProperties: false) takes this value path."""
    root = root or json.loads((CHART / "values.schema.json").read_text())
    node = root if node is None else node
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rpartition("/")[2]]
    if not path:
        return True
    properties, extra = node.get("properties", {}), node.get("additionalProperties")
    if path[0] in properties:
        return chart_allows(path[1:], properties[path[0]], root)
    if extra is None and node.get("type") != "object":
        return False  # a leaf: nothing below it
    if extra in (None, True, {}):
        return True  # a free-form map (affinity, annotations)
    return bool(extra) and chart_allows(path[1:], extra, root)  # path[0]: a key of that map


def config_allows(model: type[BaseModel], path: tuple) -> bool:
    """Whether an OperatorConfig key path exists (camelCase aliases; map keys are any name)."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    if path and path[0] not in fields:
        return False
    if len(path) <= 1:
        return True
    annotation, rest = fields[path[0]].annotation, path[1:]
    for kind in (annotation, *get_args(annotation)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return config_allows(kind, rest)
        if get_origin(kind) is dict:  # rest[0] is any key, then the value's fields
            value = get_args(kind)[1]
            is_model = isinstance(value, type) and issubclass(value, BaseModel)
            return config_allows(value, rest[1:]) if is_model else True
    return False
