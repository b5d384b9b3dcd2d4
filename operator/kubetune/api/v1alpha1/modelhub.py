"""ModelHub: a curated list of models that may be fine-tuned, and who may use them."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from kubetune.api.v1alpha1.base import API_VERSION, ApiObject, Rule
from kubetune.api.v1alpha1.common import DnsLabel, HubRef, ModelId, Resources, SecretRef, StorageUri
from kubetune.api.v1alpha1.hyperparameters import HyperparameterOverrides
from kubetune.api.v1alpha1.meta import Condition, ObjectMeta

# CEL cost estimates grow with list sizes: every list a rule iterates has a bound.
MAX_MODELS = 128
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
Text = Annotated[str, StringConstraints(max_length=1024)]
# Mirrors x-kubernetes-list-type: set, which the API server enforces on its own.
NO_REPEATS = Rule(
    cel="self.all(x, self.exists_one(y, y == x))",
    message="must not list a value twice",
    check=lambda values: len(values) == len(set(values)),
)


class LabelSelectorRequirement(ApiObject):
    """One label requirement, as in Kubernetes label selectors."""

    rules = (
        Rule(
            cel="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            message="values must be non-empty for In and NotIn and absent for Exists and "
            "DoesNotExist",
            check=lambda r: (r.operator in ("In", "NotIn")) == bool(r.values),
        ),
    )

    key: Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=317)] = Field(
        description="Label key."
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, max_length=64, description="Values for In and NotIn."
    )


class LabelSelector(ApiObject):
    """A Kubernetes label selector over Namespace labels."""

    match_labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, description="Labels the namespace must have."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None, max_length=32, description="Requirements the namespace's labels must meet."
    )


class SharedWith(ApiObject):
    """Namespaces, besides the hub's own, whose FineTuneJobs may use this hub."""

    namespaces: list[DnsLabel] | None = Field(
        None, max_length=256, description="Namespaces by name."
    )
    namespace_selector: LabelSelector | None = Field(
        None, description="Namespaces by label; an empty selector matches every namespace."
    )


class HubStorage(ApiObject):
    """How the hub's model sources are read: by the operator, and by the training pods."""

    rules = (
        Rule(
            cel="!has(self.access) || self.access != 'secret' || has(self.secretRef)",
            message="access: secret needs a secretRef (the Secret the pods get)",
            check=lambda s: s.access != "secret" or s.secret_ref is not None,
        ),
    )

    secret_ref: SecretRef | None = Field(
        None,
        description="Secret in the hub's namespace with AWS_* credentials for the model store: "
        "the operator checks sources (and signs model URLs) with it. Unset: the operator's own "
        "identity.",
    )
    access: Literal["presigned", "secret", "podIdentity"] | None = Field(
        None,
        description="How training pods read a model of this hub. presigned: the operator "
        "writes a Secret in the job's namespace holding one presigned GET URL per file of the "
        "model's source, signed with secretRef (or its own identity), refreshed while the job "
        "runs and removed when it ends; teams need no copy of the hub's credentials. secret: "
        "the pods get secretRef's keys, so a Secret of that name must exist in every job's "
        "namespace. podIdentity: the pods' own identity (IRSA, EKS Pod Identity) reads the "
        "store. Unset: presigned with a secretRef, else podIdentity.",
    )


def access_mode(storage: HubStorage | None) -> str:
    """How pods read the hub's models, defaults applied: presigned, secret or podIdentity."""
    if storage is None:
        return "podIdentity"
    return storage.access or ("presigned" if storage.secret_ref is not None else "podIdentity")


class Eula(ApiObject):
    """The model's licence terms, which a FineTuneJob accepts with acceptEula: true."""

    rules = (
        Rule(
            cel="!has(self.required) || !self.required || (has(self.url) && has(self.version))",
            message="url and version are required when required is true",
            check=lambda e: not e.required or (e.url is not None and e.version is not None),
        ),
    )

    required: bool | None = Field(None, description="FineTuneJobs must set acceptEula: true.")
    url: Annotated[str, StringConstraints(pattern=r"^https?://[!-~]+$", max_length=2048)] | None = (
        Field(None, description="Where the EULA text is.")
    )
    version: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="EULA version, recorded in the job's status when accepted."
    )


class ModelDefaults(ApiObject):
    """Defaults for jobs of this model; a job's own spec wins."""

    hyperparameters: HyperparameterOverrides | None = Field(
        None, description="Hyperparameter defaults (override the JumpStart defaults)."
    )
    resources: Resources | None = Field(None, description="Default compute.")


class ModelReference(ApiObject):
    """A model listed in another hub; references resolve transitively."""

    hub_ref: HubRef = Field(description="The hub that lists the model.")
    model_id: ModelId = Field(description="The model's modelId there.")


class HubModel(ApiObject):
    """One model of the hub: its own source, or a reference to another hub's entry."""

    rules = (
        Rule(
            cel="has(self.source) != has(self.reference)",
            message="give exactly one of source and reference",
            check=lambda m: (m.source is None) != (m.reference is None),
        ),
    )

    model_id: ModelId = Field(
        description="Id that FineTuneJobs use, e.g. meta-textgeneration-llama-3-2-1b."
    )
    display_name: Text | None = Field(None, description="Human-readable name.")
    source: StorageUri | None = Field(
        None,
        description="Folder in Hugging Face layout (config.json, *.safetensors, tokenizer files).",
    )
    reference: ModelReference | None = Field(None, description="A model of another hub.")
    eula: Eula | None = Field(None, description="Licence terms to accept.")
    tasks: Annotated[list[Literal["domain-adaptation", "instruction"]], NO_REPEATS] | None = Field(
        None,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Tasks the model may be tuned for. Unset: both.",
    )
    defaults: ModelDefaults | None = Field(None, description="Defaults for jobs of this model.")


def _model_ids_unique(spec: "ModelHubSpec") -> bool:
    ids = [m.model_id for m in spec.models]
    return len(ids) == len(set(ids))


class ModelHubSpec(ApiObject):
    """The hub's models, sharing and storage."""

    rules = (
        Rule(
            cel="self.models.all(m, self.models.exists_one(n, n.modelId == m.modelId))",
            message="modelId must be unique within the hub",
            check=_model_ids_unique,
        ),
    )

    description: Text | None = Field(None, description="What this hub is for.")
    shared_with: SharedWith | None = Field(
        None, description="Who may train from this hub; its own namespace always may."
    )
    storage: HubStorage | None = Field(None, description="Default credentials for model sources.")
    models: list[HubModel] = Field(
        min_length=1,
        max_length=MAX_MODELS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["modelId"],
        },
        description="The models.",
    )


class HubModelStatus(ApiObject):
    """Whether one model can be used."""

    model_id: str = Field(description="The model's modelId.")
    ready: bool = Field(description="Source found (and references resolved).")
    message: str | None = Field(None, description="Why not ready.")
    source: str | None = Field(None, description="Source after resolving references.")


class ModelHubStatus(ApiObject):
    """Observed state of the hub."""

    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready: every model is usable.",
    )
    models: list[HubModelStatus] | None = Field(None, description="Per-model readiness.")
    model_count: int | None = Field(None, description="Models listed.")
    ready_models: int | None = Field(None, description="Models ready.")
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


class ModelHub(ApiObject):
    """A ModelHub: models approved for fine-tuning, their defaults, and who may use them."""

    api_version: Literal["kubetune.io/v1alpha1"] = API_VERSION
    kind: Literal["ModelHub"] = "ModelHub"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelHubSpec
    status: ModelHubStatus | None = None
