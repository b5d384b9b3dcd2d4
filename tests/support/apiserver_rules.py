"""Judge a custom object as kube-apiserver would for a given CRD: the 422 side of a test API server.

Steps, in the API server's order: prune nulls, check type and object metadata, validate against
the openAPIV3Schema (unknown fields refused, as with kubectl's strict field validation), check
list-map keys and sets for duplicates, then evaluate every `x-kubernetes-validations` CEL rule
at its node with cel-python (transition rules only on update, where the node has an old value).
Not emulated: name generation (give `metadata.name`), validation ratcheting, CEL cost limits,
`messageExpression`, the Kubernetes CEL libraries (rules calling them fail at construction).
"""

import copy
import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import base_functions
from jsonschema import ValidationError, validators
from openapi_schema_validator import OAS30Validator

INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
# Schema failures after which the API server leaves CEL rules unchecked (hasBlockingErr).
BLOCKING = {"type", "anyOf", "required", "enum", "maxLength", "maxItems"}
CEL_SKIPPED = (
    "<root>: Invalid value: some validation rules were not checked because the object was "
    "invalid; correct the existing errors to complete validation"
)
CEL_MACROS = {"has", "all", "exists", "exists_one", "map", "filter"}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MISSING = object()  # no old value at this node (create, or a node new in this update)


def structural_problems(schema: dict[str, Any], path: str = "openAPIV3Schema") -> list[str]:
    """Why a CRD schema is not structural (empty when it is), stricter only on `anyOf`."""
    found = []
    if "$ref" in schema:
        found.append(f"{path}.$ref: Forbidden: $ref is not allowed")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    free_form = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if not (schema.get("type") or int_or_string or free_form):
        found.append(f"{path}.type: Required value: must not be empty")
    if "properties" in schema and "additionalProperties" in schema:
        found.append(f"{path}.additionalProperties: Forbidden: not allowed beside properties")
    for key in ("anyOf", "allOf", "oneOf", "not"):
        int_or_string_form = key == "anyOf" and int_or_string and schema[key] == INT_OR_STRING
        if key in schema and not int_or_string_form:
            found.append(f"{path}.{key}: Forbidden: only anyOf in the int-or-string form")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), dict):
        found.append(f"{path}.items: Required value: one schema for the items of an array")
    if schema.get("x-kubernetes-list-type") == "map":
        items = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            # The API server lets an item omit a key that has a default (ports' protocol: TCP).
            defaulted = "default" in items.get("properties", {}).get(key, {})
            if key not in items.get("required", []) and not defaulted:
                found.append(
                    f"{path}.x-kubernetes-list-map-keys: Invalid value: {key!r}: must be "
                    "required or have a default"
                )
    metadata = schema.get("properties", {}).get("metadata", {}) if path == "openAPIV3Schema" else {}
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        found.append(f"{path}.properties.metadata: Forbidden: only name and generateName")
    for label, child in _sub_schemas(schema):
        found += structural_problems(child, f"{path}.{label}")
    return found


def _sub_schemas(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in schema.get("properties", {}).items():
        yield f"properties[{key}]", child
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), dict):
            yield key, schema[key]


def compile_rule(rule: str) -> celpy.Runner:
    """A CEL program; raises for a syntax error or a function cel-python does not have."""
    env = celpy.Environment()
    ast = env.compile(rule)
    calls = {
        str(node.children[0 if node.data == "ident_arg" else 1])
        for node in ast.iter_subtrees()
        if node.data in ("ident_arg", "member_dot_arg")
    }
    unknown = calls - set(base_functions) - CEL_MACROS
    if unknown:
        raise ValueError(f"CEL rule {rule!r} calls {sorted(unknown)}: not standard CEL")
    return env.program(ast)


def _go_pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator:
    """`pattern` with Go (RE2) semantics: `$` only at the very end, ASCII `\\s` and `\\d`."""
    if validator.is_type(instance, "string") and not _go_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _go_regex(pattern: str) -> re.Pattern:
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern), re.ASCII)


_SchemaValidator = validators.extend(OAS30Validator, {"pattern": _go_pattern})


class CrdValidator:
    """The API server's verdict on objects of one CRD (its storage version)."""

    def __init__(self, crd: dict[str, Any]) -> None:
        version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
        self.kind = crd["spec"]["names"]["kind"]
        self.api_version = f"{crd['spec']['group']}/{version['name']}"
        self.schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        problems = structural_problems(self.schema)
        if problems:
            raise ValueError(f"{self.kind}: CRD schema is not structural: {problems}")
        self._schema_validator = _SchemaValidator(_closed(self.schema))
        # Compiled once, keyed by the schema node they sit on.
        self._programs = {
            id(node): [(rule, compile_rule(rule["rule"])) for rule in rules]
            for node, rules in _nodes_with_rules(self.schema)
        }
        # Verdicts by (rule, value, old value): a status patch re-checks an unchanged spec, and
        # cel-python's interpreter costs milliseconds a rule. Same inputs, same verdict.
        self._verdicts: dict[tuple[int, str, str], bool] = {}

    def create_problems(self, obj: dict[str, Any]) -> list[str]:
        return self._problems(obj, MISSING)

    def update_problems(self, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        return self._problems(new, _prune_nulls(old, self.schema))

    def _problems(self, obj: dict[str, Any], old: Any) -> list[str]:
        obj = _prune_nulls(obj, self.schema)
        found = self._type_and_metadata_problems(obj)
        errors = list(self._schema_validator.iter_errors(obj))
        found += [line for error in errors for line in _describe(error)]
        found += _duplicates(self.schema, obj, "")
        if any(error.validator in BLOCKING for error in errors):
            return list(dict.fromkeys(found + [CEL_SKIPPED]))
        found += self._rule_problems(self.schema, obj, old, "")
        return list(dict.fromkeys(found))

    def _type_and_metadata_problems(self, obj: dict[str, Any]) -> list[str]:
        found = []
        if obj.get("apiVersion") != self.api_version:
            found.append(f"apiVersion: Invalid value: {obj.get('apiVersion')!r}")
        if obj.get("kind") != self.kind:
            found.append(f"kind: Invalid value: {obj.get('kind')!r}")
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            return found + ["metadata: Required value"]
        name, namespace = metadata.get("name"), metadata.get("namespace")
        if not name and not metadata.get("generateName"):
            found.append("metadata.name: Required value: name or generateName is required")
        elif name and not (len(name) <= 253 and DNS_SUBDOMAIN.match(name)):
            found.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
        if namespace and not (len(namespace) <= 63 and DNS_LABEL.match(namespace)):
            found.append(f"metadata.namespace: Invalid value: {namespace!r}: an RFC 1123 label")
        return found

    def _rule_problems(self, schema: dict, value: Any, old: Any, path: str) -> list[str]:
        found = []
        for rule, program in self._programs.get(id(schema), []):
            is_transition = re.search(r"\boldSelf\b", rule["rule"]) is not None
            if is_transition and old is MISSING:
                continue
            key = (id(program), _canonical(value), _canonical(old) if is_transition else "")
            if key not in self._verdicts:
                if len(self._verdicts) > 100_000:
                    self._verdicts.clear()
                activation = {"self": _to_cel(value, schema)}
                if is_transition:
                    activation["oldSelf"] = _to_cel(old, schema)
                self._verdicts[key] = _passes(program, activation)
            if not self._verdicts[key]:
                found.append(_rule_message(path, schema, rule))
        for label, child_schema, child, key in _children(schema, value):
            child_old = _old_child(schema, old, key, child)
            found += self._rule_problems(child_schema, child, child_old, _join(path, label))
        return found


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy that refuses unknown fields wherever properties are declared."""
    out = {k: v for k, v in schema.items() if k not in ("properties", "items")}
    if "properties" in schema:
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _closed(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = _closed(schema["items"])
    return out


def _nodes_with_rules(schema: dict[str, Any]) -> Iterator[tuple[dict, list[dict]]]:
    if schema.get("x-kubernetes-validations"):
        yield schema, schema["x-kubernetes-validations"]
    for _, child in _sub_schemas(schema):
        yield from _nodes_with_rules(child)


def cel_rules(schema: dict[str, Any]) -> list[str]:
    """Every CEL rule in a schema."""
    return [rule["rule"] for _, rules in _nodes_with_rules(schema) for rule in rules]


def _child_schema(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    if "properties" in schema:
        return schema["properties"].get(key)
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _children(schema: dict[str, Any], value: Any) -> Iterator[tuple[str, dict, Any, Any]]:
    """(path label, schema, value, key) of each child the schema declares."""
    if isinstance(value, dict):
        for key, child in value.items():
            child_schema = _child_schema(schema, key)
            if child_schema is not None:
                yield key, child_schema, child, key
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield f"[{index}]", schema["items"], item, index


def _old_child(schema: dict[str, Any], old: Any, key: Any, new_child: Any) -> Any:
    """The old value of a child: by field name, or by key fields in a list-map; else MISSING."""
    if isinstance(old, dict) and isinstance(key, str):
        return old.get(key, MISSING)
    keys = schema.get("x-kubernetes-list-map-keys")
    if isinstance(old, list) and keys and isinstance(new_child, dict):
        wanted = [new_child.get(k) for k in keys]
        return next((o for o in old if [o.get(k) for k in keys] == wanted), MISSING)
    return MISSING


def _prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {
            key: _prune_nulls(child, _child_schema(schema, key) or {})
            for key, child in value.items()
            if child is not None or (_child_schema(schema, key) or {}).get("nullable")
        }
    if isinstance(value, list):
        return [_prune_nulls(item, schema.get("items", {})) for item in value]
    return value


def _duplicates(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Repeated keys of `x-kubernetes-list-type: map` lists, repeated items of sets."""
    found, seen = [], set()
    list_type = schema.get("x-kubernetes-list-type")
    if isinstance(value, list) and list_type in ("map", "set"):
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                item = {k: item.get(k) for k in schema.get("x-kubernetes-list-map-keys", [])}
            identity = json.dumps(item, sort_keys=True)
            if identity in seen:
                found.append(f"{path}[{index}]: Duplicate value: {identity}")
            seen.add(identity)
    for label, child_schema, child, _ in _children(schema, value):
        found += _duplicates(child_schema, child, _join(path, label))
    return found


def _to_cel(value: Any, schema: dict[str, Any]) -> Any:
    """JSON as the API server hands it to CEL: typed by the schema, undeclared fields dropped."""
    if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
        return celtypes.MapType(
            {
                celtypes.StringType(label): _to_cel(child, child_schema)
                for label, child_schema, child, _ in _children(schema, value)
            }
        )
    if isinstance(value, list):
        return celtypes.ListType([_to_cel(item, schema.get("items", {})) for item in value])
    if schema.get("type") == "number" and isinstance(value, int | float):
        return celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def _canonical(value: Any) -> str:
    return "<missing>" if value is MISSING else json.dumps(value, sort_keys=True)


def _passes(program: celpy.Runner, activation: dict[str, Any]) -> bool:
    """True only for a true result: an evaluation error fails the rule, as in Kubernetes."""
    try:
        result = program.evaluate(activation)
    except celpy.CELEvalError:
        return False
    return isinstance(result, celtypes.BoolType) and bool(result)


def _rule_message(path: str, schema: dict[str, Any], rule: dict[str, Any]) -> str:
    path = _join(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path
    message = rule.get("message") or f"failed rule: {rule['rule']}"
    if rule.get("reason") == "FieldValueForbidden":
        return f"{path or '<root>'}: Forbidden: {message}"
    return f'{path or "<root>"}: Invalid value: "{schema.get("type", "object")}": {message}'


def _describe(error: ValidationError) -> list[str]:
    """A jsonschema error in the API server's words (`path: Reason: value: detail`)."""
    path = ""
    for part in error.absolute_path:
        path = _join(path, f"[{part}]" if isinstance(part, int) else part)
    where = path or "<root>"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [f"{_join(path, k)}: Required value" for k in missing]
    if error.validator == "additionalProperties":
        declared = error.schema.get("properties", {})
        return [
            f"{_join(path, k)}: field not declared in schema"
            for k in error.instance
            if k not in declared
        ]
    value = json.dumps(error.instance)
    if error.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value)
        return [f"{where}: Unsupported value: {value}: supported values: {allowed}"]
    if error.validator in ("type", "anyOf"):
        expected = error.validator_value if error.validator == "type" else "integer,string"
        return [f"{where}: Invalid value: {value}: {where} in body must be of type {expected}"]
    return [f"{where}: Invalid value: {value}: {error.message}"]


def _join(path: str, label: str) -> str:
    return f"{path}{label}" if label.startswith("[") or not path else f"{path}.{label}"
