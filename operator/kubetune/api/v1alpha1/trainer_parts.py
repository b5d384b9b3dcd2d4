"""spec.trainer: the trainer image and the parts of its recipe a job selects by name.

Parts are the bundled ones (data formats domain-adaptation, instruction, chat; model families
causal-lm, seq2seq-lm; strategies single, ddp, fsdp2; callbacks such as early-stopping,
tensorboard, mlflow) or those a custom image built FROM the bundled trainer registers through
entry points. Their options are checked by the part's own schema in the trainer, before any
download, so the operator passes them on as given.
"""

import re
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from kubetune.api.v1alpha1.base import ApiObject, Rule
from kubetune.api.v1alpha1.common import DnsSubdomain

PART_NAME = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
IMAGE = r"^[a-z0-9][a-z0-9._/:@-]*$"
MAX_CALLBACKS = 16
MAX_ENV = 32
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Variables the operator, torchrun or Kubeflow set for the trainer, and storage credentials,
# which come only from the data/output/hub Secrets: a job's env may not shadow them.
RESERVED_ENV = (
    r"^(KUBETUNE_|AWS_|PET_|KUBEFLOW_|TORCHELASTIC_)|^(MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK|"
    r"LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|HOME|PATH|TMPDIR)$"
)
# A plain value under such a name is most likely a credential pasted into the spec.
CREDENTIAL_NAME = r"(?i)(TOKEN|PASSWORD|SECRET|CREDENTIAL|API_KEY|ACCESS_KEY)"

PartName = Annotated[str, StringConstraints(pattern=PART_NAME, max_length=63)]
Image = Annotated[str, StringConstraints(pattern=IMAGE, max_length=512)]


class PartSelection(ApiObject):
    """A part of the trainer's recipe, by name, with its options."""

    name: PartName = Field(description="Name the part is registered under.")
    options: dict[str, Any] | None = Field(
        None,
        description="The part's own options (see its documentation); the trainer checks them "
        "against the part's schema before anything is downloaded.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class SecretKeyRef(ApiObject):
    """One key of a Secret in the job's namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret.")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key in the Secret."
    )


class EnvSource(ApiObject):
    """Where a variable's value comes from."""

    secret_key_ref: SecretKeyRef = Field(description="A key of a Secret in the job's namespace.")


class TrainerEnv(ApiObject):
    """A variable for the trainer's parts (e.g. MLFLOW_TRACKING_TOKEN for the mlflow
    callback): a plain setting, or a Secret's key by reference."""

    name: Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=128)] = Field(
        description="Variable name; the trainer's own (KUBETUNE_*, AWS_*, torchrun's) are reserved."
    )
    value: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        None, description="A plain value; never a credential (use valueFrom)."
    )
    value_from: EnvSource | None = Field(None, description="The value from a Secret's key.")

    rules = (
        Rule(
            cel="has(self.value) != has(self.valueFrom)",
            message="set exactly one of value and valueFrom",
            check=lambda env: (env.value is None) != (env.value_from is None),
        ),
        Rule(
            cel=f"!self.name.matches('{RESERVED_ENV}')",
            message="the name is set by kubetune itself (KUBETUNE_*, AWS_*, PET_*, KUBEFLOW_*, "
            "torchrun's variables) and cannot be overridden",
            check=lambda env: re.search(RESERVED_ENV, env.name) is None,
        ),
        Rule(
            cel=f"!has(self.value) || !self.name.matches('{CREDENTIAL_NAME}')",
            message="the name looks like a credential: pass it with valueFrom.secretKeyRef, "
            "never as a plain value in the spec",
            check=lambda env: env.value is None or re.search(CREDENTIAL_NAME, env.name) is None,
        ),
    )


class TrainerParts(ApiObject):
    """Which parts the recipe runs with; unset ones are chosen from the hyperparameters and
    the model."""

    data_format: PartSelection | None = Field(
        None,
        description="How the data files become samples: domain-adaptation, instruction, chat, "
        "or a custom format. Unset: instruction when instruction_tuned, else "
        "domain-adaptation.",
    )
    model: PartSelection | None = Field(
        None,
        description="Model family: causal-lm, seq2seq-lm or a custom one. Unset: from the "
        "model's config.json (encoder-decoder models are seq2seq-lm).",
    )
    strategy: PartSelection | None = Field(
        None,
        description="Distributed strategy: single, ddp, fsdp2 or a custom one. Unset: fsdp2 "
        "with enable_fsdp on several processes, ddp on several, single on one.",
    )
    callbacks: list[PartSelection] | None = Field(
        None,
        max_length=MAX_CALLBACKS,
        description="Callbacks beside the bundled progress, checkpoint, signal, loss-curve and "
        "log ones, run in this order: e.g. early-stopping, tensorboard, mlflow, or custom ones.",
    )


class TrainerSpec(TrainerParts):
    """The trainer image, the parts of its recipe and the variables they read."""

    image: Image | None = Field(
        None,
        description="A trainer image built FROM the bundled one with extension packages "
        "installed. Unset: the operator's image for the accelerator.",
    )
    env: list[TrainerEnv] | None = Field(
        None,
        max_length=MAX_ENV,
        description="Variables for the trainer's parts, e.g. a tracking server's token from a "
        "Secret; in local mode a valueFrom variable is taken from the local environment.",
    )
