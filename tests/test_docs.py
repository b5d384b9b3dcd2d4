"""Examples inside the docs stay true: YAML in the README validates, JSON in docs loads, and
every name the docs tell a user to type exists. In each doc's code (fenced blocks, `spans`,
NOTES.txt, the comments of examples/): kubetune subcommands and their flags (the real argparse
parser) and make targets (the Makefile). Chart values (values.yaml, values.schema.json): in
`--set a.b=`, in values files (a YAML block opening `# ...values.yaml`), after "the chart's",
and in the chart README and EKS guide as dotted names under a top-level value. Operator-config
keys (OperatorConfig): in docs/operator.md's config section and the chart README's mapping."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kubetune.api.manifests import problems, read_documents
from kubetune.api.v1alpha1 import (
    ArtifactManifest,
    EpochMetrics,
    ManifestFile,
    OwnerRecord,
    ProgressReport,
    SampleAnswer,
    TrainerConfig,
    TrainingMetrics,
)
from kubetune.api.v1alpha1 import outputs as output_layout
from kubetune.api.v1alpha1.model_urls import PresignedModel
from kubetune.cli.main import parser
from kubetune.config import OperatorConfig
from tests.support.docnames import (
    CAMEL,
    CHART,
    CHART_MENTION,
    DOTTED,
    NAME,
    SET,
    chart_allows,
    chart_top_keys,
    code_of,
    commands,
    config_allows,
    fences,
    flags,
    make_targets,
    names,
    section,
    spans,
    subcommands,
    table,
    value_path,
    without_table,
    yaml_paths,
)

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "trainer-image" / "README.md", CHART / "README.md"]
DOCS += [CHART / "templates" / "NOTES.txt", *sorted(REPO.glob("docs/**/*.md"))]
DOCS += sorted(REPO.glob("examples/**/*.yaml"))
EACH_DOC = pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
CHART_DOCS = (CHART / "README.md", REPO / "docs" / "install-eks.md")
MAPPING = "| chart value | operator config key |"  # the chart README's table
CONFIG_KEYS = {field.alias for field in OperatorConfig.model_fields.values()}


def blocks(path, language):
    return fences((REPO / path).read_text(), language)


@pytest.mark.parametrize("text", blocks("README.md", "yaml"))
def test_readme_manifests_are_valid(text):
    docs = list(read_documents("README.md", text))
    assert docs and all(problems(doc) == [] for doc in docs), [problems(d) for d in docs]


def test_trainer_config_examples_load_with_the_strict_types():
    types = {"TrainerConfig": TrainerConfig, "PresignedModel": PresignedModel}  # the URLs' file
    examples = blocks("docs/trainer-config.md", "json")
    for example in examples:
        types[json.loads(example)["kind"]].model_validate_json(example)
    assert sorted(json.loads(e)["kind"] for e in examples) == sorted(types)


def test_every_output_file_and_field_is_documented():
    """docs/trainer-config.md's outputs section names each file of the layout, each type and
    every field (`in backticks`); its progress.json table has exactly ProgressReport's."""
    text = section((REPO / "docs" / "trainer-config.md").read_text(), "Outputs a trainer writes")
    named = set(re.findall(r"`([^`]+)`", text))
    kinds = (ProgressReport, TrainingMetrics, EpochMetrics, ArtifactManifest, ManifestFile)
    kinds += (OwnerRecord, SampleAnswer)
    fields = {f for kind in kinds for f in [*kind.model_fields, *kind.model_computed_fields]}
    files = {v for k, v in vars(output_layout).items() if k.isupper() and isinstance(v, str)}
    files = {f if "." in f else f"{f}/" for f in files}
    documented = {"ProgressReport", "TrainingMetrics", "ArtifactManifest", "OwnerRecord"}
    documented |= {"SampleAnswer"}
    missing = (fields | files | documented) - named
    assert not missing, f"not in docs/trainer-config.md's outputs: {sorted(missing)}"
    first = table(text, "| field | type | what |")  # progress.json's
    rows = {name for row in first for name in re.findall(r"`([^`]+)`", row[0])}
    progress = {*ProgressReport.model_fields, *ProgressReport.model_computed_fields}
    assert rows == progress, f"progress.json's table vs ProgressReport: {rows ^ progress}"


@EACH_DOC
def test_kubetune_commands_and_flags_exist(doc):
    known, wrong = subcommands(parser()), []
    for words in (w for code in code_of(doc) for w in commands(code, "kubetune")):
        sub = "" if words[0].startswith("-") else words[0]
        if sub not in known:
            wrong.append(f"kubetune {sub}: no such subcommand")
            continue
        options = known[sub]._option_string_actions
        wrong += [f"kubetune {sub} {flag}" for flag in flags(words) if flag not in options]
    assert not wrong, f"not in kubetune's parser: {wrong}"


@EACH_DOC
def test_make_targets_exist(doc):
    named = {re.match(r"[\w.-]*", w[0]).group(0) for c in code_of(doc) for w in commands(c, "make")}
    assert not named - make_targets(), f"not in the Makefile: {sorted(named - make_targets())}"


@EACH_DOC
def test_chart_values_exist(doc):
    text = doc.read_text()
    named = [value_path(name) for code in code_of(doc) for name in SET.findall(code)]
    for block in fences(text, "yaml"):
        if re.match(r"# \S*values\S*\.yaml\n", block):
            named += yaml_paths(yaml.safe_load(block))
    named += [value_path(name) for name in names(CHART_MENTION.findall(text), NAME)]
    if doc in CHART_DOCS:
        top = chart_top_keys()
        dotted = names(spans(without_table(text, MAPPING)), DOTTED)
        named += [value_path(name) for name in dotted if name.split(".")[0] in top]
    wrong = [".".join(path) for path in named if not chart_allows(path)]
    assert not wrong, f"not chart values (values.yaml, values.schema.json): {wrong}"


def test_operator_config_keys_exist():
    """Other objects' fields are written qualified there (`spec.resources.instanceType`), chart
    values after "chart value"."""
    text = section((REPO / "docs" / "operator.md").read_text(), "Configuration file")
    code = spans(CHART_MENTION.sub("", text))
    found = set(names(code, CAMEL) + names(code, DOTTED))
    keys = [n for n in found if CAMEL.fullmatch(n) or n.split(".")[0] in CONFIG_KEYS]
    named = [tuple(key.split(".")) for key in keys]
    named += [path for block in fences(text, "yaml") for path in yaml_paths(yaml.safe_load(block))]
    wrong = [".".join(path) for path in named if not config_allows(OperatorConfig, path)]
    assert not wrong, f"not OperatorConfig keys: {wrong}"


def test_chart_value_to_config_key_mapping():
    """Each row's chart value and config key exist, and every config key is reached."""
    rows = table((CHART / "README.md").read_text(), MAPPING)
    values = [tuple(row[0].strip("`").split(".")) for row in rows]
    keys = [tuple(row[1].strip("`").split(".")) for row in rows]
    assert [".".join(v) for v in values if not chart_allows(v)] == []
    assert [".".join(k) for k in keys if not config_allows(OperatorConfig, k)] == []
    assert CONFIG_KEYS <= {key[0] for key in keys}, "config keys no chart value reaches"
