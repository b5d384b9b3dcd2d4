"""The CustomResourceDefinitions, generated from the pydantic types (never edited by hand).

`make crds` writes them to crds/; a test fails when the committed files drift.
"""

from typing import Any

import yaml
from pydantic import BaseModel

from kubetune.api.structural import to_structural
from kubetune.api.v1alpha1 import GROUP, VERSION
from kubetune.api.v1alpha1.finetunejob import (
    FineTuneJob,
    FineTuneJobSpec,
    FineTuneJobStatus,
    immutability_rules,
)
from kubetune.api.v1alpha1.modelhub import ModelHub, ModelHubSpec, ModelHubStatus

CATEGORY = "kubetune"

FINETUNEJOB_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.modelId"},
    {
        "name": "Progress",
        "type": "integer",
        "jsonPath": ".status.progress.percent",
        "description": "Training steps done, in percent.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Hub", "type": "string", "jsonPath": ".spec.model.hubRef.name", "priority": 1},
    {"name": "Eval-Loss", "type": "number", "jsonPath": ".status.metrics.evalLoss", "priority": 1},
    {
        "name": "ETA",
        "type": "integer",
        "jsonPath": ".status.progress.etaSeconds",
        "priority": 1,
        "description": "Seconds to completion.",
    },
    {"name": "Artifacts", "type": "string", "jsonPath": ".status.artifacts.uri", "priority": 1},
]

MODELHUB_COLUMNS = [
    {"name": "Models", "type": "integer", "jsonPath": ".status.modelCount"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Ready-Models", "type": "integer", "jsonPath": ".status.readyModels", "priority": 1},
    {"name": "Description", "type": "string", "jsonPath": ".spec.description", "priority": 1},
]


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return to_structural(model.model_json_schema(by_alias=True))


def object_schema(
    kind: type[BaseModel], spec: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    """The openAPIV3Schema of a whole object: standard header, spec, status, root rules."""
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "kubetune.io/v1alpha1"},
            "kind": {"type": "string", "description": kind.__name__},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if kind.rules:
        root["x-kubernetes-validations"] = [rule.as_cel() for rule in kind.rules]
    return root


def crd(
    kind: type[BaseModel],
    plural: str,
    short_name: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.__name__,
                "listKind": f"{kind.__name__}List",
                "plural": plural,
                "singular": kind.__name__.lower(),
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def finetunejob_crd() -> dict[str, Any]:
    spec = schema_of(FineTuneJobSpec)
    spec["x-kubernetes-validations"] = spec.get("x-kubernetes-validations", []) + [
        {**rule, "reason": "FieldValueForbidden"} for rule in immutability_rules()
    ]
    schema = object_schema(FineTuneJob, spec, schema_of(FineTuneJobStatus))
    return crd(FineTuneJob, "finetunejobs", "ftj", schema, FINETUNEJOB_COLUMNS)


def modelhub_crd() -> dict[str, Any]:
    schema = object_schema(ModelHub, schema_of(ModelHubSpec), schema_of(ModelHubStatus))
    return crd(ModelHub, "modelhubs", "mhub", schema, MODELHUB_COLUMNS)


def all_crds() -> list[dict[str, Any]]:
    return [finetunejob_crd(), modelhub_crd()]


def file_name(crd_obj: dict[str, Any]) -> str:
    """controller-gen's naming: <group>_<plural>.yaml."""
    names = crd_obj["spec"]["names"]
    return f"{crd_obj['spec']['group']}_{names['plural']}.yaml"


class _PlainDumper(yaml.SafeDumper):
    """No &anchors / *aliases for shared sub-objects: CRD YAML is read by people."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(crd_obj: dict[str, Any]) -> str:
    header = "# Generated by `make crds` from kubetune.api.v1alpha1: do not edit.\n"
    return header + yaml.dump(crd_obj, Dumper=_PlainDumper, sort_keys=False, width=100)
