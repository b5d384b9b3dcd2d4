"""Extension points: plain name -> part maps, filled by the bundled parts and by any installed
package that declares entry points in the group (`kubetune.data_formats`, `kubetune.models`,
`kubetune.strategies`, `kubetune.callbacks`). A FineTuneJob selects parts by name; each part
validates its own options with its pydantic model before anything is downloaded.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel


class PartError(ValueError):
    """A part is unknown, badly declared, or its options break its schema: the user's to fix."""


class Options(BaseModel):
    """A part's options: camelCase in YAML like the rest of the API; unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class NoOptions(Options):
    """For parts that take none."""


class Part(Protocol):
    name: str
    options: type[BaseModel]


P = TypeVar("P", bound=Part)


@dataclass(frozen=True)
class Chosen(Generic[P]):
    """A part and its validated options."""

    part: P
    options: BaseModel


class Registry(Generic[P]):
    """The parts of one kind: bundled ones added at import, installed ones found through entry
    points on first lookup. An installed part may not take a bundled part's name."""

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._parts: dict[str, P] = {}
        self._loaded = False

    def add(self, part: P) -> P:
        if part.name in self._parts:
            raise PartError(f"{self.kind} {part.name!r} is registered twice")
        self._parts[part.name] = part
        return part

    def get(self, name: str, where: str) -> P:
        self._load_entry_points()
        if name not in self._parts:
            known = ", ".join(sorted(self._parts)) or "none"
            raise PartError(
                f"{where}: unknown {self.kind} {name!r} (known: {known}); a custom one comes "
                f"from a package in the trainer image with a {self.group!r} entry point"
            )
        return self._parts[name]

    def choose(self, name: str, options: dict[str, Any] | None, where: str) -> Chosen[P]:
        """The part named `name` with `options` validated; `where` is the field path users
        wrote it at (spec.trainer.callbacks[1]), named in every error."""
        part = self.get(name, f"{where}.name")
        try:
            return Chosen(part, part.options.model_validate(options or {}))
        except ValidationError as err:
            raise PartError(options_problems(err, f"{where}.options")) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._parts)

    def __iter__(self) -> Iterator[P]:
        self._load_entry_points()
        return iter(list(self._parts.values()))

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for point in entry_points(group=self.group):
            try:
                part = point.load()
            except Exception as err:  # a broken plug-in names itself, not a traceback
                raise PartError(
                    f"entry point {point.name!r} in {self.group!r} ({point.value}) does not "
                    f"load: {type(err).__name__}: {err}"
                ) from None
            if getattr(part, "name", None) != point.name:
                raise PartError(
                    f"entry point {point.name!r} in {self.group!r} ({point.value}) must be a "
                    f"{self.kind} named {point.name!r}, got {getattr(part, 'name', part)!r}"
                )
            self.add(part)


def options_problems(err: ValidationError, where: str) -> str:
    """One line: every problem with its field path, e.g.
    `spec.trainer.callbacks[0].options.patience: Input should be greater than 0 (got 0)`."""
    problems = []
    for e in err.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        got = f" (got {e['input']!r})" if e["type"] != "missing" and "input" in e else ""
        problems.append(f"{where}{path}: {e['msg']}{got}")
    return "; ".join(problems)
