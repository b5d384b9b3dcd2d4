"""The API server emulation itself: structural check, schema, list types, CEL evaluation."""

from pathlib import Path

import pytest
import yaml

from kubetune.api.crds import all_crds
from tests.support.apiserver_rules import CrdValidator, compile_rule, structural_problems

REPO = Path(__file__).resolve().parents[2]


def toy_crd(spec_schema: dict) -> dict:
    """A CRD for kind Toy whose spec has the given schema."""
    root = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
        },
    }
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": root}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "toys.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Toy", "plural": "toys"},
            "versions": [version],
        },
    }


def toy(spec: object) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Toy", "metadata": {"name": "t"}, "spec": spec}


def rule(cel: str, message: str = "broken", **more: str) -> list[dict]:
    return [{"rule": cel, "message": message, **more}]


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_generated_crds_are_structural(crd: dict) -> None:
    assert structural_problems(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) == []


@pytest.mark.parametrize("path", sorted((REPO / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_crds_are_structural(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert structural_problems(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) == []


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "object", "properties": {"x": {"description": "no type"}}}, "properties[x].type"),
        ({"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}}, "$ref"),
        (
            {
                "type": "object",
                "properties": {"x": {"type": "string"}},
                "additionalProperties": {"type": "string"},
            },
            "additionalProperties",
        ),
        ({"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, "anyOf"),
        ({"type": "object", "properties": {"x": {"type": "array"}}}, "properties[x].items"),
        (
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["id"],
                "items": {"type": "object", "properties": {"id": {"type": "string"}}},
            },
            "x-kubernetes-list-map-keys",
        ),
    ],
)
def test_non_structural_schemas_are_named(schema: dict, complaint: str) -> None:
    found = structural_problems(schema)
    assert any(complaint in line for line in found), found
    with pytest.raises(ValueError, match="not structural"):
        CrdValidator(toy_crd(schema))


def test_int_or_string_is_structural() -> None:
    quantity = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }
    assert structural_problems({"type": "object", "properties": {"cpu": quantity}}) == []


def test_a_list_map_key_with_a_default_need_not_be_required() -> None:
    """As the API server allows (a container's ports are keyed by containerPort and protocol,
    whose default is TCP): KServe's InferenceService CRD is built that way."""
    ports = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
        "items": {
            "type": "object",
            "required": ["containerPort"],
            "properties": {
                "containerPort": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"},
            },
        },
    }
    assert structural_problems({"type": "object", "properties": {"ports": ports}}) == []


@pytest.mark.parametrize("cel", ["self.x ==", "self.url.isURL()", "quantity(self.q) > 1"])
def test_rules_outside_standard_cel_fail_at_construction(cel: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - a parse error or our ValueError
        compile_rule(cel)
    schema = {
        "type": "object",
        "properties": {"x": {"type": "string"}},
        "x-kubernetes-validations": rule(cel),
    }
    with pytest.raises(Exception):  # noqa: B017
        CrdValidator(toy_crd(schema))


def test_failed_rule_names_path_and_message() -> None:
    inner = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": rule("self.a > 1", "a must be > 1"),
    }
    schema = {"type": "object", "properties": {"r": inner}}
    validator = CrdValidator(toy_crd(schema))
    assert validator.create_problems(toy({"r": {"a": 2}})) == []
    assert validator.create_problems(toy({"r": {"a": 1}})) == [
        'spec.r: Invalid value: "object": a must be > 1'
    ]


def test_evaluation_error_fails_the_rule() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": rule("self.a > 1", "a must be > 1"),
    }
    assert CrdValidator(toy_crd(schema)).create_problems(toy({})) == [
        'spec: Invalid value: "object": a must be > 1'
    ]


def test_numbers_reach_cel_as_doubles() -> None:
    schema = {
        "type": "object",
        "properties": {"r": {"type": "number"}},
        "x-kubernetes-validations": rule("self.r < 1.5"),
    }
    assert CrdValidator(toy_crd(schema)).create_problems(toy({"r": 1})) == []


def test_nulls_are_pruned_and_unknown_fields_refused() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "l": {"type": "array", "items": {"type": "string"}},
        },
    }
    validator = CrdValidator(toy_crd(schema))
    assert validator.create_problems(toy({"a": None})) == []
    assert any("spec.l[0]" in line for line in validator.create_problems(toy({"l": [None]})))
    assert validator.create_problems(toy({"b": 1})) == ["spec.b: field not declared in schema"]
    free_metadata = {**toy({}), "metadata": {"name": "t", "labels": {"a": "b"}}}
    assert validator.create_problems(free_metadata) == []


def test_patterns_follow_go_regexp() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^[a-z]+$"}}}
    validator = CrdValidator(toy_crd(schema))
    assert validator.create_problems(toy({"s": "abc"})) == []
    assert validator.create_problems(toy({"s": "abc\n"})) != []  # Python's `$` would match


def test_metadata_name_is_required_and_a_dns_subdomain() -> None:
    validator = CrdValidator(toy_crd({"type": "object"}))
    assert validator.create_problems({**toy({}), "metadata": {}}) != []
    assert validator.create_problems({**toy({}), "metadata": {"name": "Toy"}}) != []
    assert validator.create_problems({**toy({}), "metadata": {"name": "toy.v1"}}) == []


def test_list_map_keys_and_sets_are_unique() -> None:
    schema = {
        "type": "object",
        "properties": {
            "m": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["id"],
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string"}, "v": {"type": "integer"}},
                },
            },
            "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        },
    }
    validator = CrdValidator(toy_crd(schema))
    assert validator.create_problems(toy({"m": [{"id": "a"}, {"id": "b"}], "s": ["a", "b"]})) == []
    assert validator.create_problems(toy({"m": [{"id": "a", "v": 1}, {"id": "a", "v": 2}]})) == [
        'spec.m[1]: Duplicate value: {"id": "a"}'
    ]
    assert validator.create_problems(toy({"s": ["a", "a"]})) == ['spec.s[1]: Duplicate value: "a"']


def test_transition_rules_need_an_old_value() -> None:
    frozen = rule("self.v == oldSelf.v", "v is immutable", reason="FieldValueForbidden")
    schema = {
        "type": "object",
        "properties": {
            "m": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["id"],
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "x-kubernetes-validations": frozen,
                    "properties": {"id": {"type": "string"}, "v": {"type": "integer"}},
                },
            },
        },
    }
    validator = CrdValidator(toy_crd(schema))
    old = toy({"m": [{"id": "a", "v": 1}]})
    assert validator.create_problems(old) == []  # no oldSelf on create
    added = toy({"m": [{"id": "b", "v": 2}, {"id": "a", "v": 1}]})
    assert validator.update_problems(old, added) == []  # items correlate by key, not position
    changed = toy({"m": [{"id": "a", "v": 2}]})
    assert validator.update_problems(old, changed) == ["spec.m[0]: Forbidden: v is immutable"]


def test_cel_waits_for_type_errors_to_be_fixed() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": rule("self.a > 1"),
    }
    found = CrdValidator(toy_crd(schema)).create_problems(toy({"a": "two"}))
    assert found[0].startswith("spec.a: Invalid value") and "not checked" in found[-1]
