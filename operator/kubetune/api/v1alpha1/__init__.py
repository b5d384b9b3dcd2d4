"""kubetune.io/v1alpha1: FineTuneJob, ModelHub and the TrainerConfig contract."""

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
from kubetune.api.v1alpha1.trainer_config import TrainerConfig

KINDS = {"FineTuneJob": FineTuneJob, "ModelHub": ModelHub}

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "HubModel",
    "HubRef",
    "HyperparameterOverrides",
    "Hyperparameters",
    "ModelHub",
    "ModelHubSpec",
    "ModelHubStatus",
    "ResolvedHyperparameters",
    "Resources",
    "SecretRef",
    "TrainerConfig",
    "spec_update_problems",
]
