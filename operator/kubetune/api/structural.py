"""Turn a pydantic JSON schema into a Kubernetes structural schema (OpenAPI v3 subset).

Structural means: no `$ref`, a `type` on every node, no `additionalProperties` beside
`properties`, and `anyOf` only in the int-or-string form. Null is "unset": the API server
prunes nulls of non-nullable fields, so `X | None` becomes plain `X`.
"""

from typing import Any

# Keys copied as they are; everything else pydantic emits (title, default...) is dropped.
# Defaults stay out on purpose: the API server would write them into spec, and defaults are
# resolved by the operator (job > hub model > JumpStart) into status.resolved.
_KEPT = (
    "type",
    "description",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
)


def to_structural(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural form of a pydantic `model_json_schema(by_alias=True)` result."""
    return _convert(schema, schema.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        node = _collapse_any_of(node, defs)
    out = {key: node[key] for key in _KEPT if key in node}
    if "const" in node:
        out["enum"] = [node["const"]]
    # JSON Schema 2020 spells exclusive bounds as numbers, OpenAPI v3.0 as booleans.
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[plain] = node[bound]
            out[bound] = True
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {k: _convert(v, defs) for k, v in node["properties"].items()}
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    if "items" in node:
        out["items"] = _convert(node["items"], defs)
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"schema node has no type and cannot be structural: {node}")
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref`; the referring field's own keys (its description) win."""
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].rsplit("/", 1)[-1]]
    merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
    if "x-kubernetes-validations" in target and "x-kubernetes-validations" in node:
        merged["x-kubernetes-validations"] = (
            target["x-kubernetes-validations"] + node["x-kubernetes-validations"]
        )
    return merged


def _collapse_any_of(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`X | None` -> X; `int | str` (a Kubernetes quantity) -> int-or-string."""
    branches = [_resolve(b, defs) for b in node["anyOf"] if b.get("type") != "null"]
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if len(branches) == 1:
        inner = branches[0]
        if "anyOf" in inner:
            inner = _collapse_any_of(inner, defs)
        return {**inner, **outer}
    types = sorted(b.get("type") for b in branches)
    if types == ["integer", "string"]:
        string = next(b for b in branches if b["type"] == "string")
        integer = next(b for b in branches if b["type"] == "integer")
        # Outside anyOf, string rules apply to strings only and number rules to numbers only.
        kept = {k: string[k] for k in ("pattern", "maxLength") if k in string}
        kept |= {k: integer[k] for k in ("minimum", "maximum") if k in integer}
        return {**kept, **outer, "x-kubernetes-int-or-string": True}
    raise ValueError(f"union cannot be expressed in a structural schema: {node['anyOf']}")
