"""TrainerConfig: the resolved configuration the operator (or local mode) hands the trainer.

A documented contract (docs/trainer-config.md, docs/trainer-config.schema.json): the bundled
trainer and any custom trainer image read this JSON from /etc/kubetune/config.json. It holds
no credentials; storage access comes from AWS_* environment variables set from Secrets.
"""

from typing import Literal

from pydantic import Field

from kubetune.api.v1alpha1.base import API_VERSION, ApiObject
from kubetune.api.v1alpha1.common import StorageUri
from kubetune.api.v1alpha1.hyperparameters import ResolvedHyperparameters
from kubetune.api.v1alpha1.trainer_parts import TrainerParts

DEFAULT_PATH = "/etc/kubetune/config.json"
# The variables of a storage Secret the trainer reads, each under its channel's prefix
# (KUBETUNE_DATA_AWS_ACCESS_KEY_ID ...): where a backend cannot pass a whole Secret with a prefix
# (a TrainJob's runtimePatches have no envFrom), each is referenced by name.
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)


class JobIdentity(ApiObject):
    """The FineTuneJob this run belongs to."""

    name: str = Field(description="FineTuneJob name.")
    namespace: str = Field(description="FineTuneJob namespace ('local' in local mode).")
    uid: str = Field(
        description="FineTuneJob uid. Artifacts record it, so a rerun never mistakes another "
        "job's output for its own."
    )


class ModelSource(ApiObject):
    """The model to load, after hub references were resolved."""

    model_id: str = Field(description="Hub modelId.")
    source: StorageUri = Field(description="Folder in Hugging Face layout.")


class DataChannels(ApiObject):
    """Data locations."""

    train: StorageUri = Field(description="Training data folder or file.")
    validation: StorageUri | None = Field(
        None, description="Validation data; unset: validation_split_ratio of train."
    )
    test: StorageUri | None = Field(
        None, description="Test data, scored after training; unset: no test scores."
    )


# The data channels, as DataChannels and the FineTuneJob's spec.data (less its secretRef)
# declare them: what lists, checks or downloads "every data channel" iterates over this.
DATA_CHANNELS: tuple[str, ...] = tuple(DataChannels.model_fields)


class OutputLocation(ApiObject):
    """Where this job writes checkpoints and artifacts."""

    uri: StorageUri = Field(description="Output prefix; MANIFEST.json there marks completion.")


class TrainerConfig(ApiObject):
    """Everything one training run needs, resolved: no defaults left to apply."""

    api_version: Literal["kubetune.io/v1alpha1"] = Field(
        API_VERSION, description="Always kubetune.io/v1alpha1."
    )
    kind: Literal["TrainerConfig"] = Field("TrainerConfig", description="Always TrainerConfig.")
    job: JobIdentity = Field(description="The job this run belongs to.")
    model: ModelSource = Field(description="The base model.")
    data: DataChannels = Field(description="Training, validation and test data.")
    hyperparameters: ResolvedHyperparameters = Field(
        description="All hyperparameters, resolved: every key present."
    )
    output: OutputLocation = Field(description="Artifact location.")
    trainer: TrainerParts = Field(
        default_factory=TrainerParts,
        description="The recipe's parts by name with their options; unset ones are chosen by "
        "the trainer from the hyperparameters and the model.",
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        description="Starts of this job allowed (runPolicy.backoffLimit + 1); the next start "
        "exits 3 (RETRIES_EXHAUSTED). Unset: no limit (local mode, where a rerun resumes).",
    )
