"""spec.trainer: the trainer image and the parts of its recipe a job selects by name.

Parts are the bundled ones (data formats domain-adaptation, instruction, chat; model families
causal-lm, seq2seq-lm; strategies single, ddp, fsdp2; callbacks such as early-stopping,
tensorboard, mlflow) or those a custom image built FROM the bundled trainer registers through
entry points. Their options are checked by the part's own schema in the trainer, before any
download, so the operator passes them on as given.
"""

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from kubetune.api.v1alpha1.base import ApiObject

PART_NAME = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
IMAGE = r"^[a-z0-9][a-z0-9._/:@-]*$"
MAX_CALLBACKS = 16

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
    """The trainer image and the parts of its recipe."""

    image: Image | None = Field(
        None,
        description="A trainer image built FROM the bundled one with extension packages "
        "installed. Unset: the operator's image for the accelerator.",
    )
