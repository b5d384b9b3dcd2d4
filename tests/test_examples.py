"""Every example opens with the command that runs it (STYLE.md habit 9)."""

from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").rglob("*.yaml"))


def test_there_are_examples_of_each_kind():
    text = "".join(p.read_text() for p in EXAMPLES)
    assert "kind: ModelHub" in text
    assert "instruction_tuned: true" in text
    assert text.count("kind: FineTuneJob") >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_opens_with_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# kubectl ", "# kubetune ")), first
    assert path.name in first
