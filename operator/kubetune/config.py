"""The operator's configuration: one YAML file (the chart renders it into a ConfigMap), read
once at startup. Every setting is documented where it is declared."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationError, model_validator

from kubetune.api.manifests import describe_all
from kubetune.api.safeload import CONFIG, LoadError, load_yaml, read_bounded
from kubetune.api.v1alpha1.base import ApiObject
from kubetune.api.v1alpha1.common import INSTANCE_TYPE, Quantity, SecretRef, StorageUri
from kubetune.api.v1alpha1.model_urls import MAX_LIFETIME_SECONDS
from kubetune.profiles import builtin_profiles

DEFAULT_IMAGE = "ghcr.io/kubetune/trainer"
# A profile's name is what FineTuneJobs give as spec.resources.instanceType: the same rule.
InstanceType = Annotated[str, StringConstraints(pattern=INSTANCE_TYPE, max_length=64)]
CONFIGMAP_KEY = "config.yaml"  # the chart's ConfigMap (templates/configmap.yaml) holds the file
DEFAULT_TAG = "0.1.0"


class InstanceProfile(ApiObject):
    """What an instanceType means: accelerators, requests and placement of one node (pod)."""

    accelerator: Literal["nvidia", "neuron", "none"] = Field(description="Accelerator kind.")
    accelerators: int = Field(0, ge=0, description="Accelerator resource count per node.")
    processes_per_node: int = Field(
        1, ge=1, description="Training processes per node (GPUs, or NeuronCores)."
    )
    cpu: Quantity | None = Field(None, description="CPU request per node.")
    memory: Quantity | None = Field(None, description="Memory request per node.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[dict] = Field(default_factory=list, description="Pod tolerations.")


class Images(ApiObject):
    """Trainer images per accelerator kind."""

    nvidia: str = Field(f"{DEFAULT_IMAGE}:{DEFAULT_TAG}-cuda", description="CUDA trainer image.")
    neuron: str = Field(f"{DEFAULT_IMAGE}:{DEFAULT_TAG}-neuron", description="Neuron image.")
    cpu: str = Field(f"{DEFAULT_IMAGE}:{DEFAULT_TAG}-cuda", description="Image for CPU jobs.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of trainer pods."
    )


class DefaultOutput(ApiObject):
    """Where jobs without spec.output write: URI/NAMESPACE/NAME/."""

    uri: StorageUri | None = Field(None, description="Output prefix, e.g. s3://ml-artifacts/.")
    secret_ref: SecretRef | None = Field(None, description="Secret for that bucket.")


class DefaultResources(ApiObject):
    """Compute for jobs whose spec and hub model give none."""

    accelerator: Literal["nvidia", "neuron", "none"] = Field("nvidia", description="Kind.")
    accelerators_per_node: int = Field(1, ge=1, description="Accelerators per node.")
    cpu: Quantity | None = Field(None, description="CPU request per node.")
    memory: Quantity | None = Field(None, description="Memory request per node.")


class PresignedUrls(ApiObject):
    """Model URLs for jobs of hubs with storage.access: presigned (api/v1alpha1/model_urls.py).
    A pod that starts reads the URLs in force then: each must outlive the model's download."""

    lifetime_seconds: int = Field(
        86400,
        ge=10,
        le=MAX_LIFETIME_SECONDS,
        description="How long each signed URL works (SigV4 allows at most 7 days). A leaked "
        "URL reads one model file for at most this long.",
    )
    refresh_margin_seconds: int = Field(
        43200,
        ge=5,
        description="The URLs are signed again once less than this is left, so a pod that "
        "starts any time finds URLs good for at least this long, less the kubelet's delay in "
        "updating a mounted Secret (about a minute). It also bounds how long the operator may "
        "be down before starting pods find expired URLs. Less than lifetimeSeconds.",
    )

    @model_validator(mode="after")
    def _margin_below_lifetime(self) -> "PresignedUrls":
        if self.refresh_margin_seconds >= self.lifetime_seconds:
            raise ValueError(
                f"refreshMarginSeconds ({self.refresh_margin_seconds}) must be less than "
                f"lifetimeSeconds ({self.lifetime_seconds})"
            )
        return self


class OperatorConfig(ApiObject):
    """Settings of one operator installation."""

    images: Images = Field(default_factory=Images, description="Trainer images.")
    default_output: DefaultOutput = Field(
        default_factory=DefaultOutput, description="Output of jobs without spec.output."
    )
    default_resources: DefaultResources = Field(
        default_factory=DefaultResources, description="Compute when job and hub give none."
    )
    instance_profiles: dict[InstanceType, InstanceProfile] = Field(
        default_factory=dict,
        description="Extra or replaced instance profiles, by instance type; built-ins for "
        "common EKS g5, g6, g6e, p4d, p5 and trn1 instances are always there.",
    )
    training_backend: Literal["auto", "trainjob", "pytorchjob"] = Field(
        "auto",
        description="What runs the training: Kubeflow Trainer v2 TrainJobs (trainjob), Training "
        "Operator v1 PyTorchJobs (pytorchjob), or auto: TrainJob where the cluster serves it, "
        "else PyTorchJob, decided once at start-up. A job keeps the backend it started with.",
    )
    training_runtime: str = Field(
        "kubetune",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="The ClusterTrainingRuntime TrainJobs refer to (the chart ships it).",
    )
    default_queue_name: str | None = Field(
        None, description="Kueue LocalQueue for jobs that name none."
    )
    trainer_service_account: str | None = Field(
        None,
        description="ServiceAccount of trainer pods, e.g. one bound to an IAM role (IRSA) "
        "for S3 access without Secrets. Unset: the namespace's default.",
    )
    shm_size: Quantity = Field("16Gi", description="Size of /dev/shm in trainer pods.")
    scratch_size: Quantity = Field("200Gi", description="Scratch emptyDir: model and data copies.")
    termination_grace_seconds: int = Field(
        120, ge=30, description="Time a preempted trainer has to save its checkpoint."
    )
    progress_interval_seconds: float = Field(
        30, gt=0, description="How often running jobs' progress.json is read."
    )
    hub_recheck_seconds: float = Field(
        300, gt=0, description="How often hubs re-check that model sources exist."
    )
    presigned_urls: PresignedUrls = Field(
        default_factory=PresignedUrls,
        description="Lifetime and refresh of the model URLs of presigned hub access.",
    )

    @model_validator(mode="after")
    def _with_builtins(self) -> "OperatorConfig":
        profiles = {k: InstanceProfile.model_validate(v) for k, v in builtin_profiles().items()}
        self.instance_profiles = {**profiles, **self.instance_profiles}
        return self


class ConfigError(ValueError):
    """The operator configuration file is unreadable or invalid."""


def load_config(path: Path | None) -> OperatorConfig:
    """The file's settings over the defaults; no file: the defaults. The file is the config
    itself, or the chart's ConfigMap holding it, so that `helm template ... --show-only
    templates/configmap.yaml` turns chart values into what `kubetune render --config` takes."""
    if path is None:
        return OperatorConfig()
    try:
        data = load_yaml(read_bounded(Path(path), CONFIG), CONFIG) or {}
        if isinstance(data, dict) and data.get("kind") == "ConfigMap":
            embedded = (data.get("data") or {}).get(CONFIGMAP_KEY)
            if not isinstance(embedded, str):
                raise ConfigError(f"{path}: a ConfigMap without data.{CONFIGMAP_KEY}")
            data = load_yaml(embedded, CONFIG) or {}
        return OperatorConfig.model_validate(data)
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except LoadError as err:
        raise ConfigError(f"{path}: {err}") from None
    except ValidationError as err:
        problems = "; ".join(describe_all(err.errors()))
        raise ConfigError(f"{path}: invalid operator config: {problems}") from None
