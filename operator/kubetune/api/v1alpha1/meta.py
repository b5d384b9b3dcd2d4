"""The parts of Kubernetes object metadata and status that kubetune reads or writes."""

from typing import Literal

from pydantic import ConfigDict, Field

from kubetune.api.v1alpha1.base import ApiObject
from kubetune.api.v1alpha1.common import DnsLabel, DnsSubdomain


class ObjectMeta(ApiObject):
    """Object metadata: only `name` and `namespace` are checked; the API server owns the rest."""

    model_config = ConfigDict(extra="allow")

    # The API server requires a DNS subdomain for every custom object name.
    name: DnsSubdomain | None = Field(None, description="Object name.")
    namespace: DnsLabel | None = Field(None, description="Object namespace.")


class Condition(ApiObject):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type, e.g. Validated, Running, Succeeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="CamelCase reason for the last transition.")
    message: str | None = Field(None, description="Human-readable details.")
    last_transition_time: str | None = Field(
        None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this condition was computed from."
    )
