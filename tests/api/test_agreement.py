"""pydantic and the shipped CRDs (openAPIV3Schema + CEL rules) give every manifest the same verdict.

The corpus under corpus/valid and corpus/invalid holds one object per file; an invalid file
opens with `# expect: FIELD.PATH`, which both `kubetune validate` and the API server must name.
The CRD side is judged by tests.support.apiserver_rules, as kube-apiserver would judge it.
"""

import copy
from pathlib import Path

import pytest
import yaml

from kubetune.api.manifests import Document, problems, prune_nulls, read_documents
from kubetune.api.v1alpha1 import spec_update_problems
from tests.support.apiserver_rules import CrdValidator, cel_rules, compile_rule
from tests.support.corpus import EXAMPLE_JOB, INVALID, REPO, UPDATES, VALID, expected_field, load

SHIPPED_CRDS = sorted((REPO / "crds").glob("*.yaml"))
VALIDATORS = {
    validator.kind: validator
    for validator in (CrdValidator(yaml.safe_load(path.read_text())) for path in SHIPPED_CRDS)
}


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
    for doc in read_documents(str(path), path.read_text()):
        assert crd_problems(doc.body) == [], doc.label


def test_crd_rejects_obviously_wrong_objects() -> None:
    example = load(EXAMPLE_JOB).body
    wrong = copy.deepcopy(example)
    wrong["spec"]["hyperparameters"]["epoch"] = 0
    assert any("spec.hyperparameters.epoch" in line for line in crd_problems(wrong))
    assert crd_problems({**example, "spec": "train it please"})
    assert crd_problems({**example, "kind": "ModelHub"})
    assert crd_problems({"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub"})


@pytest.mark.parametrize(("before", "change", "field"), [u[1:] for u in UPDATES],
                         ids=[u[0] for u in UPDATES])
def test_spec_updates_agree(before, change, field) -> None:
    old = prune_nulls(load(EXAMPLE_JOB).body)
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
