"""Examples inside the docs stay true: YAML in the README validates, JSON in docs loads."""

import re
from pathlib import Path

import pytest

from kubetune.api.manifests import problems, read_documents
from kubetune.api.v1alpha1 import TrainerConfig

REPO = Path(__file__).resolve().parents[1]


def blocks(path, language):
    return re.findall(rf"```{language}\n(.*?)```", (REPO / path).read_text(), re.S)


@pytest.mark.parametrize("text", blocks("README.md", "yaml"))
def test_readme_manifests_are_valid(text):
    docs = list(read_documents("README.md", text))
    assert docs and all(problems(doc) == [] for doc in docs), [problems(d) for d in docs]


def test_trainer_config_example_loads_with_the_strict_type():
    (example,) = blocks("docs/trainer-config.md", "json")
    TrainerConfig.model_validate_json(example)
