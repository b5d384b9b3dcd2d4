"""FineTuneJob: one fine-tuning run of a hub model on data in S3-compatible storage."""

import re
from typing import Any, Literal

from pydantic import Field

from kubetune.api.v1alpha1.base import API_VERSION, ApiObject, Rule
from kubetune.api.v1alpha1.common import (
    DnsSubdomain,
    HubRef,
    ModelId,
    Resources,
    SecretRef,
    StorageUri,
)
from kubetune.api.v1alpha1.hyperparameters import HyperparameterOverrides, Hyperparameters
from kubetune.api.v1alpha1.meta import Condition, ObjectMeta
from kubetune.api.v1alpha1.trainer_parts import TrainerSpec

# Changing these restarts nothing: the operator suspends/resumes or re-renders scheduling.
MUTABLE_SPEC_FIELDS = ("suspend", "runPolicy", "scheduling")
# The name becomes the training job's and its pods' hostnames (DNS-1035, <= 63):
# "<name>-worker-1023" (PyTorchJob), "<name>-node-0-1023" (TrainJob's JobSet).
MAX_NAME_LENGTH = 50
DEFAULT_BACKOFF_LIMIT = 3
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ModelRef(ApiObject):
    """The model to fine-tune: an entry of a ModelHub."""

    hub_ref: HubRef = Field(description="The ModelHub that lists the model.")
    model_id: ModelId = Field(description="The model's modelId in that hub.")


class DataSpec(ApiObject):
    """Training (and optional validation and test) data: folders or files in S3-compatible
    storage."""

    train: StorageUri = Field(
        description="Training data: s3://bucket/prefix/ (a folder holding one data file, or "
        "for instruction tuning .jsonl files and an optional template.json) or a file."
    )
    validation: StorageUri | None = Field(
        None,
        description="Validation data, same layout. Unset: validation_split_ratio of train.",
    )
    test: StorageUri | None = Field(
        None,
        description="Test data, same layout: never trained on nor split; scored once after "
        "training with the best epoch's weights (metrics.json test_loss, samples.jsonl).",
    )
    secret_ref: SecretRef | None = Field(
        None,
        description="Secret with AWS_* credentials (and AWS_ENDPOINT_URL for MinIO, Ceph...). "
        "Unset: the pod's own identity (IRSA, EKS Pod Identity).",
    )


class OutputSpec(ApiObject):
    """Where artifacts go: adapter/, merged/, metrics.json, checkpoints/, MANIFEST.json."""

    uri: StorageUri = Field(
        description="Output prefix, e.g. s3://artifacts/support-bot/. Artifacts are complete "
        "once MANIFEST.json exists there."
    )
    secret_ref: SecretRef | None = Field(
        None, description="Secret with AWS_* credentials for the output bucket."
    )


class Scheduling(ApiObject):
    """Queueing and priority. May change after creation."""

    queue_name: DnsSubdomain | None = Field(
        None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name)."
    )
    priority_class_name: DnsSubdomain | None = Field(
        None, description="PriorityClass of the training pods."
    )


class RunPolicy(ApiObject):
    """Retries, deadlines and clean-up of the training job. May change after creation."""

    backoff_limit: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Retries after a retryable failure (preemption, OOM, lost node, storage "
        "outage) before the job fails. Default: 3.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job after running this long. Default: none."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the training job this long after it ends. Default: none."
    )
    @property
    def retries(self) -> int:
        return DEFAULT_BACKOFF_LIMIT if self.backoff_limit is None else self.backoff_limit

    clean_pod_policy: Literal["None", "Running", "All"] | None = Field(
        None, description="Which pods to delete when the job ends. Default: None."
    )


class FineTuneJobSpec(ApiObject):
    """What to fine-tune, on which data, with which hyperparameters and compute."""

    model: ModelRef = Field(description="The hub model to fine-tune.")
    accept_eula: bool | None = Field(
        None,
        description="Accept the model's EULA (required when the hub entry says so). "
        "Default: false.",
    )
    data: DataSpec = Field(description="Training, validation and test data.")
    hyperparameters: HyperparameterOverrides | None = Field(
        None,
        description="Hyperparameters with JumpStart names. Unset ones come from the hub "
        "model's defaults, then the JumpStart defaults.",
    )
    resources: Resources | None = Field(
        None, description="Compute. Unset: the hub model's default resources."
    )
    output: OutputSpec | None = Field(
        None, description="Where artifacts go. Unset: the operator's default output storage."
    )
    scheduling: Scheduling | None = Field(None, description="Queue and priority.")
    run_policy: RunPolicy | None = Field(None, description="Retries, deadline and clean-up.")
    suspend: bool | None = Field(
        None, description="Suspend (true) or resume (false) the job. Default: false."
    )
    trainer: TrainerSpec | None = Field(
        None,
        description="The trainer image and the recipe's parts (data format, model family, "
        "strategy, callbacks). Unset: the bundled trainer, parts chosen from the "
        "hyperparameters and the model.",
    )


class Progress(ApiObject):
    """Training progress, from the trainer's progress.json."""

    epoch: int | None = Field(None, description="Current epoch (1-based).")
    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps in the whole run.")
    percent: int | None = Field(None, description="Steps done, in percent.")
    eta_seconds: int | None = Field(None, description="Estimated seconds to completion.")


class Metrics(ApiObject):
    """Latest training metrics."""

    train_loss: float | None = Field(None, description="Mean training loss of the last interval.")
    eval_loss: float | None = Field(None, description="Validation loss of the last epoch.")
    eval_perplexity: float | None = Field(None, description="exp(eval_loss).")
    test_loss: float | None = Field(
        None, description="Test channel loss with the best epoch's weights, once finished."
    )
    test_perplexity: float | None = Field(None, description="exp(testLoss).")
    tokens_per_second: float | None = Field(
        None, description="Non-padding tokens per second over all ranks."
    )


class Artifacts(ApiObject):
    """Where the finished artifacts are (set once MANIFEST.json exists)."""

    uri: str | None = Field(None, description="Output prefix of this job.")
    adapter: str | None = Field(None, description="LoRA adapter folder.")
    merged: str | None = Field(None, description="Merged weights folder, when merge_weights.")


class TrainingJobRef(ApiObject):
    """The training job the operator created."""

    kind: Literal["TrainJob", "PyTorchJob"] | None = Field(
        None,
        description="TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2) or PyTorchJob "
        "(kubeflow.org/v1, Training Operator v1): the backend this job started with and keeps.",
    )
    name: str | None = Field(None, description="Name, in the FineTuneJob's namespace.")


class Resolved(ApiObject):
    """Everything the operator resolved from the hub and its defaults; spec is never written."""

    model_source: str | None = Field(None, description="Model source after hub references.")
    hyperparameters: Hyperparameters | None = Field(
        None, description="All hyperparameters, defaults applied."
    )
    eula_version: str | None = Field(None, description="EULA version accepted, if any.")


class FineTuneJobStatus(ApiObject):
    """Observed state, rebuilt by the operator from the world on every reconcile."""

    phase: Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"] | None = (
        Field(None, description="Pending, Queued, Running, Succeeded, Failed or Suspended.")
    )
    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Validated, ModelResolved, DataValidated, Running, Succeeded, Failed.",
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")
    training_job: TrainingJobRef | None = Field(None, description="The training job created.")
    resolved: Resolved | None = Field(None, description="Model source and hyperparameters used.")
    progress: Progress | None = Field(None, description="Training progress.")
    metrics: Metrics | None = Field(None, description="Latest metrics.")
    artifacts: Artifacts | None = Field(None, description="Artifact locations.")
    start_time: str | None = Field(None, description="When training started (RFC 3339).")
    completion_time: str | None = Field(None, description="When training ended (RFC 3339).")


def _name_is_valid(job: "FineTuneJob") -> bool:
    name = job.metadata.name
    return name is None or (
        len(name) <= MAX_NAME_LENGTH and re.match(NAME_PATTERN, name) is not None
    )


class FineTuneJob(ApiObject):
    """A FineTuneJob: fine-tune a hub model with LoRA; artifacts land in S3-compatible storage."""

    rules = (
        Rule(
            cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            message=f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} "
            "characters (it names the training job's pods and services)",
            check=_name_is_valid,
        ),
    )

    api_version: Literal["kubetune.io/v1alpha1"] = API_VERSION
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None


def immutable_spec_fields() -> list[str]:
    """spec fields (YAML names) that may not change after creation."""
    return [
        info.alias
        for info in FineTuneJobSpec.model_fields.values()
        if info.alias not in MUTABLE_SPEC_FIELDS
    ]


def immutability_message(field: str) -> str:
    return f"spec.{field} cannot change after creation: create a new FineTuneJob instead"


def immutability_rules() -> list[dict[str, str]]:
    """CEL transition rules for the spec: the API server refuses changes to immutable fields."""
    return [
        {
            "rule": f"has(self.{f}) == has(oldSelf.{f}) && "
            f"(!has(self.{f}) || self.{f} == oldSelf.{f})",
            "message": immutability_message(f),
        }
        for f in immutable_spec_fields()
    ]


def spec_update_problems(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[str]:
    """The Python side of `immutability_rules`, on specs as stored (nulls pruned)."""
    return [
        immutability_message(f)
        for f in immutable_spec_fields()
        if old_spec.get(f) != new_spec.get(f)
    ]
