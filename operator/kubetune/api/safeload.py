"""Bounded reading of the YAML and JSON that users hand us: size, nesting depth, alias
expansion and duplicate keys are checked before anything is built, so a hostile or broken
file fails in milliseconds with one line instead of exhausting memory.

YAML is read with YAML 1.2 number rules (`1e-4` is a float, as for kubectl) and libyaml's C
parser where PyYAML has it (ten times faster on large manifests).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """How much one file may hold. The defaults fit any real manifest many times over: the
    API server refuses a request body over 3 MiB and etcd an object over 1.5 MiB."""

    max_bytes: int = 16 * MiB
    max_depth: int = 64
    # Nodes of one document counted with every alias expanded, i.e. what consumers walk.
    max_nodes: int = 1_000_000


MANIFEST = Limits()
CONFIG = Limits(max_bytes=1 * MiB)
TEMPLATE = Limits(max_bytes=1 * MiB)


class LoadError(ValueError):
    """The file is over a limit or not valid YAML/JSON; the message is one line without the
    file name (callers prefix it)."""


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Yaml12Loader(_Base):
    """PyYAML follows YAML 1.1, where `1e-4` is a string; kubectl reads it as a number."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)"
        r"|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_bounded(path: Path, limits: Limits) -> str:
    """The file's UTF-8 text, refused before reading when it is over the size limit."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise LoadError(f"{_mib(size)} is over the {_mib(limits.max_bytes)} limit for this file")
    return path.read_bytes().decode("utf-8-sig")


def load_yaml_all(text: str, limits: Limits = MANIFEST) -> Iterator[Any]:
    """Each document of a multi-document YAML text, every one checked before it is built."""
    if len(text) > limits.max_bytes:
        raise LoadError(f"{_mib(len(text))} is over the {_mib(limits.max_bytes)} limit")
    try:
        _check(Yaml12Loader(text), limits)
        loader = Yaml12Loader(text)
        try:
            while loader.check_node():
                yield loader.construct_document(loader.get_node())
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise LoadError(f"invalid YAML: {yaml_error(err)}") from None


def load_yaml(text: str, limits: Limits = CONFIG) -> Any:
    """The one document of a YAML text (None when empty)."""
    documents = list(load_yaml_all(text, limits))
    if len(documents) > 1:
        raise LoadError(f"expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None


class _Node:
    """An open collection while checking: its expanded size so far, its anchor, and for a
    mapping whether the next node is a key, and the line of each scalar key seen."""

    __slots__ = ("size", "anchor", "mapping", "expect_key", "keys")

    def __init__(self, anchor: str | None, mapping: bool):
        self.size, self.anchor, self.mapping = 1, anchor, mapping
        self.expect_key, self.keys = True, {}


def _check(loader: yaml.SafeLoader, limits: Limits) -> None:
    """One pass over the parser's events, no nodes built: depth, expanded size (an alias
    counts as the whole node it names) and duplicate mapping keys, as kubectl refuses them."""
    open_nodes: list[_Node] = []
    anchors: dict[str, int] = {}  # anchor -> expanded size of its finished node
    total = 0
    scalar, alias = yaml.ScalarEvent, yaml.AliasEvent  # most events: test these first
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    try:
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            if kind is scalar:
                if open_nodes and open_nodes[-1].mapping:
                    _key_of(open_nodes[-1], event.value, event)
                if event.anchor:
                    anchors[event.anchor] = 1
                total = _add(open_nodes, 1, total, limits, event)
            elif kind in starts:
                if open_nodes and open_nodes[-1].mapping:
                    _key_of(open_nodes[-1], None, event)
                open_nodes.append(_Node(event.anchor, kind is yaml.MappingStartEvent))
                if len(open_nodes) > limits.max_depth:
                    raise LoadError(
                        f"line {_line(event)}: nested deeper than {limits.max_depth} levels"
                    )
            elif kind in ends:
                node = open_nodes.pop()
                if node.anchor:
                    anchors[node.anchor] = node.size
                total = _add(open_nodes, node.size, total, limits, event)
            elif kind is alias:
                if open_nodes and open_nodes[-1].mapping:
                    _key_of(open_nodes[-1], None, event)
                if event.anchor not in anchors:
                    if any(n.anchor == event.anchor for n in open_nodes):
                        raise LoadError(
                            f"line {_line(event)}: alias *{event.anchor} refers to a node that "
                            "contains it (a recursive structure)"
                        )
                    raise LoadError(f"line {_line(event)}: undefined alias *{event.anchor}")
                total = _add(open_nodes, anchors[event.anchor], total, limits, event)
            elif kind is yaml.DocumentStartEvent:
                anchors, total = {}, 0
    finally:
        loader.dispose()


def _key_of(mapping: _Node, value: str | None, event: yaml.Event) -> None:
    """Record a mapping key (scalar keys only) and refuse one seen before in that mapping."""
    is_key, mapping.expect_key = mapping.expect_key, not mapping.expect_key
    if not is_key or value is None or value == "<<":
        return
    if value in mapping.keys:
        raise LoadError(
            f"line {_line(event)}: mapping key {value!r} already defined at line "
            f"{mapping.keys[value]}"
        )
    mapping.keys[value] = _line(event)


def _add(open_nodes: list[_Node], size: int, total: int, limits: Limits, event) -> int:
    """Count a finished node into its parent (or the document) and refuse a bomb early."""
    if open_nodes:
        open_nodes[-1].size += size
        counted = open_nodes[-1].size
    else:
        total += size
        counted = total
    if counted > limits.max_nodes:
        raise LoadError(
            f"line {_line(event)}: more than {limits.max_nodes:,} values with aliases expanded "
            "(an alias bomb?)"
        )
    return total


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark else 0


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB / 10 else f"{size:,} bytes"


def yaml_error(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
