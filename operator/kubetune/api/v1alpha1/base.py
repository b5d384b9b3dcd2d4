"""Building blocks shared by the v1alpha1 types: the strict base model and `Rule`.

A `Rule` is declared once and enforced twice: by pydantic (the operator, `kubetune validate`,
local mode) and, emitted as an `x-kubernetes-validations` CEL rule, by the API server itself.
Keep `cel` in standard CEL (no Kubernetes CEL libraries): the tests evaluate it with cel-python.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Rule:
    """One validation rule, as CEL for the API server and as a Python check for pydantic.

    As a field annotation (`Annotated[int, Rule(...)]`) `self` is the field's value; in a
    model's `rules` it is the model (`check` then receives the validated model instance).
    """

    cel: str
    message: str
    check: Callable[[Any], bool]

    def as_cel(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message}

    # Used as an Annotated marker on a field: validate after the type, add CEL to the schema.
    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            if not self.check(value):
                raise PydanticCustomError("kubetune_rule", self.message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(self.as_cel())
        return json_schema


class Strict(BaseModel):
    """Base of every API type: unknown fields rejected, no type coercion.

    Strictness matches the API server: `"5"` is not an integer and `"yes"` is not a boolean.
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> "Strict":
        broken = [rule.message for rule in self.rules if not rule.check(self)]
        if broken:
            raise PydanticCustomError("kubetune_rule", "; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        if cls.rules:
            target = handler.resolve_ref_schema(json_schema)
            target["x-kubernetes-validations"] = [rule.as_cel() for rule in cls.rules]
        return json_schema


class ApiObject(Strict):
    """camelCase in YAML, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel)
