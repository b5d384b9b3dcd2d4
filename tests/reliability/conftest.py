"""Figures for docs/reliability.md: each suite records what it injected and what survived with
the `figures` fixture; they are printed at the end of the pytest run and written to
build/reliability-figures.json. Tests marked `soak` (longer variants) run only with `--soak`
(`make soak`)."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_FIGURES: dict[str, dict[str, object]] = defaultdict(dict)


class Figures:
    """`figures.record("kill -9 runs survived", 10)`: one named figure for this test's suite."""

    def __init__(self, suite: str):
        self.suite = suite

    def record(self, name: str, value: object) -> None:
        _FIGURES[self.suite][name] = value

    def add(self, name: str, value: int | float) -> None:
        _FIGURES[self.suite][name] = _FIGURES[self.suite].get(name, 0) + value


@pytest.fixture(name="figures")
def figures_fixture(request) -> Figures:
    return Figures(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for suite, figures in sorted(_FIGURES.items()):
        for name, value in figures.items():
            terminalreporter.write_line(f"{suite}: {name} = {value}")
    out = REPO / "build" / "reliability-figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(_FIGURES, indent=2, sort_keys=True) + "\n")
