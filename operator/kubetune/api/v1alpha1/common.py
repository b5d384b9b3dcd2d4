"""Types shared by FineTuneJob and ModelHub: names, URIs, secret and hub references, resources.

Every pattern here is also emitted into the CRD schema; `PATTERN_RULES` gives each one the
sentence that error messages use instead of the raw regex. Keep patterns in the regex subset
that Python, Rust (pydantic) and Go (the API server) agree on.
"""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from kubetune.api.v1alpha1.base import ApiObject, Rule

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# s3://bucket[/prefix] (bucket naming rules of S3) or file:///absolute/path (local mode only).
# Visible ASCII only ([!-~]): `\s` means ASCII space to Go but any Unicode space to Rust.
STORAGE_URI = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[!-~]*)?|file:///[!-~]*)$"
INSTANCE_TYPE = r"^[a-z0-9][a-z0-9-]*\.[a-z0-9-]+$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"

PATTERN_RULES = {
    DNS_LABEL: "must be a DNS label (lowercase letters, digits and '-', starting and ending "
    "with a letter or digit)",
    DNS_SUBDOMAIN: "must be a DNS subdomain (lowercase letters, digits, '-' and '.')",
    MODEL_ID: "must start with a letter or digit and contain only letters, digits, '.', '_' "
    "and '-'",
    STORAGE_URI: "must be an s3://bucket/prefix URI (or file:///path for local mode)",
    INSTANCE_TYPE: "must be an instance type such as g5.12xlarge",
    QUANTITY: "must be a Kubernetes quantity such as 8, 500m, 32Gi",
}

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]
ModelId = Annotated[str, StringConstraints(pattern=MODEL_ID, max_length=128)]
StorageUri = Annotated[str, StringConstraints(pattern=STORAGE_URI, max_length=1024)]
# Kubernetes quantities are int-or-string: `cpu: 8` and `memory: 32Gi` both work.
Quantity = Annotated[
    Annotated[int, Field(ge=0)]
    | Annotated[str, StringConstraints(pattern=QUANTITY, max_length=32)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


class SecretRef(ApiObject):
    """A Secret in the object's own namespace. Values are never copied: pods get it by `envFrom`."""

    name: DnsSubdomain = Field(description="Name of the Secret.")


class HubRef(ApiObject):
    """A ModelHub, by name and namespace."""

    name: DnsSubdomain = Field(description="Name of the ModelHub.")
    namespace: DnsLabel | None = Field(
        None, description="Namespace of the ModelHub. Default: the referring object's namespace."
    )


class Resources(ApiObject):
    """Compute for the training job: an `instanceType` profile, or explicit accelerator fields."""

    rules = (
        Rule(
            cel="!has(self.instanceType) || (!has(self.accelerator) && "
            "!has(self.acceleratorsPerNode))",
            message="give either instanceType or accelerator/acceleratorsPerNode, not both",
            check=lambda r: (
                r.instance_type is None
                or (r.accelerator is None and r.accelerators_per_node is None)
            ),
        ),
        Rule(
            cel="!has(self.acceleratorsPerNode) || "
            "(has(self.accelerator) && self.accelerator != 'none')",
            message="acceleratorsPerNode needs accelerator nvidia or neuron",
            check=lambda r: (
                r.accelerators_per_node is None or r.accelerator in ("nvidia", "neuron")
            ),
        ),
    )

    instance_type: (
        Annotated[str, StringConstraints(pattern=INSTANCE_TYPE, max_length=64)] | None
    ) = Field(
        None,
        description="Instance type (e.g. g5.12xlarge, p5.48xlarge, trn1.32xlarge), resolved "
        "through the operator's instance profiles to node selector, accelerators, CPU and memory.",
    )
    accelerator: Literal["nvidia", "neuron", "none"] | None = Field(
        None,
        description="Accelerator kind: nvidia (nvidia.com/gpu), neuron (aws.amazon.com/neuron) "
        "or none (CPU only).",
    )
    accelerators_per_node: int | None = Field(
        None, ge=1, le=64, description="Accelerators per node; one training process each."
    )
    nodes: int | None = Field(
        None, ge=1, le=1024, description="Number of nodes (pods) training together. Default: 1."
    )
    cpu: Quantity | None = Field(None, description="CPU request per node, e.g. 8 or 7500m.")
    memory: Quantity | None = Field(None, description="Memory request per node, e.g. 64Gi.")
