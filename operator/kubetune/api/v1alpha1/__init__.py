"""kubetune.io/v1alpha1: FineTuneJob, ModelHub, and the trainer's contracts: TrainerConfig in, the
output files (progress.json, metrics.json, samples.jsonl, MANIFEST.json, job.json) out."""

from kubetune.api.v1alpha1.base import API_VERSION, GROUP, VERSION
from kubetune.api.v1alpha1.common import HubRef, Resources, SecretRef
from kubetune.api.v1alpha1.finetunejob import (
    FineTuneJob,
    FineTuneJobSpec,
    FineTuneJobStatus,
    spec_update_problems,
)
from kubetune.api.v1alpha1.hyperparameters import (
    HyperparameterOverrides,
    Hyperparameters,
    ResolvedHyperparameters,
)
from kubetune.api.v1alpha1.modelhub import HubModel, ModelHub, ModelHubSpec, ModelHubStatus
from kubetune.api.v1alpha1.outputs import (
    ArtifactManifest,
    EpochMetrics,
    ManifestFile,
    OwnerRecord,
    ProgressReport,
    PromptFormat,
    SampleAnswer,
    TrainingMetrics,
)
from kubetune.api.v1alpha1.trainer_config import TrainerConfig

KINDS = {"FineTuneJob": FineTuneJob, "ModelHub": ModelHub}

__all__ = [
    "API_VERSION",
    "ArtifactManifest",
    "GROUP",
    "KINDS",
    "VERSION",
    "EpochMetrics",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "HubModel",
    "HubRef",
    "HyperparameterOverrides",
    "Hyperparameters",
    "ManifestFile",
    "ModelHub",
    "ModelHubSpec",
    "ModelHubStatus",
    "OwnerRecord",
    "ProgressReport",
    "PromptFormat",
    "ResolvedHyperparameters",
    "SampleAnswer",
    "Resources",
    "SecretRef",
    "TrainerConfig",
    "TrainingMetrics",
    "spec_update_problems",
]
