"""The generated CRDs: committed files match the types, and carry what kubectl users see."""

from pathlib import Path

import pytest
import yaml

from kubetune.api.crds import all_crds, file_name, finetunejob_crd, modelhub_crd, to_yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crd", all_crds(), ids=file_name)
def test_committed_crd_matches_the_types(crd):
    committed = REPO / "crds" / file_name(crd)
    assert committed.exists(), f"{committed} is missing: run `make crds` and commit crds/"
    assert committed.read_text() == to_yaml(crd), (
        f"{committed} drifted from kubetune.api.v1alpha1: run `make crds` and commit the result"
    )


def test_committed_trainer_config_schema_matches_the_types():
    import json

    from kubetune.cli.crds_cmd import trainer_config_schema

    committed = REPO / "docs" / "trainer-config.schema.json"
    assert json.loads(committed.read_text()) == trainer_config_schema(), (
        f"{committed} drifted from TrainerConfig: run `make crds` and commit the result"
    )


def test_crd_yaml_has_no_anchors_and_round_trips():
    for crd in all_crds():
        text = to_yaml(crd)
        assert "&id" not in text and "*id" not in text
        assert yaml.safe_load(text) == crd


def version(crd):
    (only,) = crd["spec"]["versions"]
    return only


@pytest.mark.parametrize(
    "crd, short, columns",
    [
        (finetunejob_crd(), "ftj", ["Phase", "Model", "Progress", "Age"]),
        (modelhub_crd(), "mhub", ["Models", "Ready", "Age"]),
    ],
    ids=["finetunejob", "modelhub"],
)
def test_names_columns_and_status_subresource(crd, short, columns):
    names = crd["spec"]["names"]
    assert names["shortNames"] == [short]
    assert names["categories"] == ["kubetune"]
    assert crd["spec"]["scope"] == "Namespaced"
    v = version(crd)
    assert v["subresources"] == {"status": {}}
    default_columns = [c["name"] for c in v["additionalPrinterColumns"] if not c.get("priority")]
    assert default_columns == columns


def walk(node, path="$"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("crd", all_crds(), ids=file_name)
def test_every_spec_field_is_documented_for_kubectl_explain(crd):
    spec = version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [
        path
        for path, node in walk(spec, "spec")
        if not path.endswith("[]") and not path.endswith(".*") and not node.get("description")
    ]
    assert undocumented == []


@pytest.mark.parametrize("crd", all_crds(), ids=file_name)
def test_no_defaults_so_the_api_server_never_writes_spec(crd):
    # Defaults are resolved by the operator (job > hub model > JumpStart) into status.resolved.
    schema = version(crd)["schema"]["openAPIV3Schema"]
    assert [path for path, node in walk(schema) if "default" in node] == []


@pytest.mark.parametrize("crd", all_crds(), ids=file_name)
def test_lists_and_strings_under_cel_rules_are_bounded(crd):
    # The API server refuses CRDs whose rules' estimated cost is unbounded.
    schema = version(crd)["schema"]["openAPIV3Schema"]
    unbounded = [
        path
        for path, node in walk(schema)
        if node.get("x-kubernetes-validations")
        and node.get("type") == "array"
        and "maxItems" not in node
    ]
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            if ".all(" in rule["rule"] or ".exists" in rule["rule"]:
                for name, child in node.get("properties", {"": node}).items():
                    if child.get("type") == "array" and "maxItems" not in child:
                        unbounded.append(f"{path}.{name}")
    assert unbounded == []


def test_spec_is_immutable_except_suspend_run_policy_scheduling():
    spec = version(finetunejob_crd())["schema"]["openAPIV3Schema"]["properties"]["spec"]
    transition = [r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    guarded = {r["rule"].split("has(self.")[1].split(")")[0] for r in transition}
    assert guarded == set(spec["properties"]) - {"suspend", "runPolicy", "scheduling"}
    assert all("create a new FineTuneJob" in r["message"] for r in transition)
