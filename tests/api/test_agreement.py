"""pydantic and the shipped CRDs (openAPIV3Schema + CEL rules) give every manifest the same verdict.

The corpus under corpus/valid and corpus/invalid holds one object per file; an invalid file
opens with `# expect: FIELD.PATH`, which both `kubetune validate` and the API server must name.
The CRD side is judged by tests.support.apiserver_rules, as kube-apiserver would judge it.
"""

import copy
import re
from pathlib import Path

import pytest
import yaml

from kubetune.api.manifests import Document, problems, prune_nulls, read_documents
from kubetune.api.v1alpha1 import spec_update_problems
from tests.support.apiserver_rules import CrdValidator, cel_rules, compile_rule

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
SHIPPED_CRDS = sorted((REPO / "crds").glob("*.yaml"))
VALIDATORS = {
    validator.kind: validator
    for validator in (CrdValidator(yaml.safe_load(path.read_text())) for path in SHIPPED_CRDS)
}


def load(path: Path) -> Document:
    """The file's only object, read as `kubetune validate` reads it (YAML 1.2 numbers)."""
    documents = list(read_documents(str(path), path.read_text(encoding="utf-8")))
    assert len(documents) == 1 and documents[0].error is None, f"{path}: one object per file"
    return documents[0]


def expected_field(path: Path) -> str:
    found = re.match(r"# expect: (\S+)\n", path.read_text(encoding="utf-8"))
    assert found, f"{path.name}: an invalid manifest opens with `# expect: FIELD.PATH`"
    return found.group(1)


def crd_problems(body: dict) -> list[str]:
    return VALIDATORS[body["kind"]].create_problems(body)


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_pydantic_and_crd_agree(path: Path) -> None:
    doc = load(path)
    found = {"kubetune validate": problems(doc), "CRD": crd_problems(doc.body)}
    verdicts = {side: "valid" if not lines else "invalid" for side, lines in found.items()}
    assert verdicts == dict.fromkeys(found, path.parent.name), (
        f"{path.name}: pydantic and the CRD disagree: {found}"
    )
    if path.parent.name == "invalid":
        field = expected_field(path)
        for side, lines in found.items():
            assert any(field in line for line in lines), f"{side} does not name {field}: {lines}"


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30 and len(VALID) >= 10, (len(INVALID), len(VALID))
    kinds = {load(path).body["kind"] for path in VALID + INVALID}
    assert kinds == {"FineTuneJob", "ModelHub"}


def test_both_crds_are_judged() -> None:
    assert set(VALIDATORS) == {"FineTuneJob", "ModelHub"}


@pytest.mark.parametrize("path", SHIPPED_CRDS, ids=lambda p: p.name)
def test_every_cel_rule_compiles(path: Path) -> None:
    rules = cel_rules(yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]
                      ["openAPIV3Schema"])
    assert rules, "the CRD carries its cross-field rules as CEL"
    for rule in rules:
        compile_rule(rule)


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_crd_accepts_the_examples(path: Path) -> None:
    assert crd_problems(load(path).body) == []


def test_crd_rejects_obviously_wrong_objects() -> None:
    example = load(REPO / "examples" / "finetunejob-instruction.yaml").body
    wrong = copy.deepcopy(example)
    wrong["spec"]["hyperparameters"]["epoch"] = 0
    assert any("spec.hyperparameters.epoch" in line for line in crd_problems(wrong))
    assert crd_problems({**example, "spec": "train it please"})
    assert crd_problems({**example, "kind": "ModelHub"})
    assert crd_problems({"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub"})


# Updates of a stored FineTuneJob: (name, change to the stored spec first, then the update,
# the field named when refused, or None when the update is accepted).
UPDATES = [
    ("hyperparameter-changed", None, lambda s: s["hyperparameters"].update(epoch=5),
     "spec.hyperparameters"),
    ("hyperparameters-removed", None, lambda s: s.pop("hyperparameters"), "spec.hyperparameters"),
    ("train-data-changed", None, lambda s: s["data"].update(train="s3://datasets/support/v2/"),
     "spec.data"),
    ("validation-data-added", lambda s: s["data"].pop("validation"),
     lambda s: s["data"].update(validation="s3://datasets/support/val/"), "spec.data"),
    ("model-changed", None, lambda s: s["model"].update(modelId="mistral-7b"), "spec.model"),
    ("resources-added", lambda s: s.pop("resources"),
     lambda s: s.update(resources={"accelerator": "nvidia", "acceleratorsPerNode": 1}),
     "spec.resources"),
    ("output-changed", None, lambda s: s["output"].update(uri="s3://artifacts/other/"),
     "spec.output"),
    ("eula-acceptance-withdrawn", None, lambda s: s.update(acceptEula=False), "spec.acceptEula"),
    ("suspended", None, lambda s: s.update(suspend=True), None),
    ("suspend-added", lambda s: s.pop("suspend"), lambda s: s.update(suspend=True), None),
    ("run-policy-changed", None, lambda s: s["runPolicy"].update(backoffLimit=10), None),
    ("scheduling-changed", None, lambda s: s["scheduling"].update(queueName="team-b"), None),
    ("scheduling-removed", None, lambda s: s.pop("scheduling"), None),
    ("learning-rate-respelled", lambda s: s["hyperparameters"].update(learning_rate=0.0002),
     lambda s: s["hyperparameters"].update(learning_rate=2e-4), None),
    ("nothing-changed", None, lambda s: None, None),
]


@pytest.mark.parametrize(("before", "change", "field"), [u[1:] for u in UPDATES],
                         ids=[u[0] for u in UPDATES])
def test_spec_updates_agree(before, change, field) -> None:
    old = prune_nulls(load(REPO / "examples" / "finetunejob-instruction.yaml").body)
    if before:
        before(old["spec"])
    new = copy.deepcopy(old)
    change(new["spec"])
    assert problems(Document("new", 0, new)) == [], "the updated object itself is valid"
    found = {
        "spec_update_problems": spec_update_problems(old["spec"], new["spec"]),
        "CRD": VALIDATORS["FineTuneJob"].update_problems(old, new),
    }
    if field is None:
        assert found == {"spec_update_problems": [], "CRD": []}
    else:
        for side, lines in found.items():
            assert any(field in line for line in lines), f"{side} allows a change of {field}"
