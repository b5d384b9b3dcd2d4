"""What a trainer leaves under a job's output URI: the layout's names and its JSON files as types,
declared once for the trainer (which writes them), the operator and the CLI (which read them).
docs/trainer-config.md ("Outputs a trainer writes") documents them for custom trainer images.

    OUTPUT/job.json          OwnerRecord: the job that claimed the prefix, and its starts
    OUTPUT/progress.json     ProgressReport: rewritten while it trains, then how the run ended
    OUTPUT/checkpoints/      step-NNNNNNNN/ folders, each complete once its CHECKPOINT.json is in
    OUTPUT/adapter/          the LoRA adapter (peft) and tokenizer
    OUTPUT/merged/           base model with the adapter merged (merge_weights)
    OUTPUT/metrics.json      TrainingMetrics of the best epoch, and every epoch's
    OUTPUT/samples.jsonl     SampleAnswer lines: greedy answers to the first test samples
    OUTPUT/config.json       the TrainerConfig of the run
    OUTPUT/prompt.json       PromptFormat: how records became text, for `kubetune generate`
    OUTPUT/loss_curve.png    and loss_curve.csv
    OUTPUT/MANIFEST.json     ArtifactManifest, written last: its presence means complete

The files keep snake_case keys (unlike the camelCase resources) and are read leniently: keys a
newer trainer adds are ignored, so an older operator or CLI still reads its files. A field added
here needs a default, so that files written before it still read.
"""

import datetime
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    model_validator,
)

from kubetune.api.v1alpha1.trainer_config import JobIdentity, ModelSource

PROGRESS = "progress.json"
METRICS = "metrics.json"
SAMPLES = "samples.jsonl"
MANIFEST = "MANIFEST.json"
OWNER = "job.json"
CONFIG = "config.json"
PROMPT = "prompt.json"
LOSS_CURVE_PNG = "loss_curve.png"
LOSS_CURVE_CSV = "loss_curve.csv"
ADAPTER = "adapter"  # folders: `join_uri(uri, ADAPTER, "")` is adapter/
MERGED = "merged"
CHECKPOINTS = "checkpoints"
CHECKPOINT_MANIFEST = "CHECKPOINT.json"  # in each checkpoints/step-NNNNNNNN/, written last

State = Literal["starting", "training", "succeeded", "failed", "stopped"]
WeightsDtype = Literal["bfloat16", "float16", "float32"]
ENDED: tuple[State, ...] = ("succeeded", "failed", "stopped")


class InvalidOutput(ValueError):
    """A file that is not what its type says: where, and why, in one line."""


class OutputFile(BaseModel):
    """Base of the output files: keys as the Python names, unknown keys ignored on reading."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def read(cls, data: bytes | str, where: str) -> Self:
        """The file's content as this type; InvalidOutput names `where` (its URI) if not."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in err.errors()
            )
            raise InvalidOutput(f"{where}: not a valid {cls.__name__}: {problems}") from None


class JobRecord(JobIdentity, OutputFile):
    """The job a file belongs to: TrainerConfig's job (its fields), read as the files are."""

    model_config = ConfigDict(extra="ignore", strict=False)


class ModelRecord(ModelSource, OutputFile):
    """The base model: TrainerConfig's model (its fields), read as the files are."""

    model_config = ConfigDict(extra="ignore", strict=False)


class OwnerRecord(JobRecord):
    """job.json: written first, it claims the output prefix for one job (by uid); another
    job's trainer refuses the prefix rather than mix files."""

    starts: int = Field(0, ge=0, description="Starts of this job's trainer so far (rank 0's).")


class ProgressReport(OutputFile):
    """progress.json: rewritten by rank 0 every few seconds while the job trains, at each
    epoch end, and once more with the outcome. The source of status.progress and, until the
    artifacts are complete, status.metrics."""

    state: State = Field(
        "training",
        description="starting: this start of the trainer claimed the output, nothing is "
        "trained yet (the figures are the previous start's, if any); training; succeeded: the "
        "artifacts are complete; failed: stopped by a problem to fix (message says which); "
        "stopped: by a signal after a checkpoint (stop_signal, step), a rerun resumes. A run "
        "ended by a retryable error (storage or a peer lost) leaves the state as it was.",
    )
    epoch: int = Field(1, ge=1, description="Epoch in progress, 1-based.")
    step: int = Field(0, ge=0, description="Optimizer steps done since the start of the job.")
    total_steps: int | None = Field(None, ge=0, description="Optimizer steps of the whole job.")
    percent: int | None = Field(None, description="step / total_steps, in percent.")
    train_loss: float | None = Field(None, description="Loss of the latest step.")
    eval_loss: float | None = Field(None, description="Validation loss of the latest epoch.")
    tokens_per_second: float | None = Field(
        None, description="Non-padding tokens of all ranks per second of training steps."
    )
    eta_seconds: int | None = Field(None, description="Estimated seconds to the last step.")
    # Known once data and model are loaded (state training).
    epochs: int | None = Field(None, ge=1, description="Epochs of the job.")
    rows: int | None = Field(
        None, ge=0, description="Training rows per epoch: samples, or packed blocks (packing)."
    )
    samples: int | None = Field(None, ge=0, description="Training samples after preprocessing.")
    validation_samples: int | None = Field(None, ge=0, description="Validation samples.")
    world_size: int | None = Field(None, ge=1, description="Training processes (ranks).")
    # How it ended.
    stop_signal: str | None = Field(
        None, description="State stopped: the signal's name, e.g. SIGTERM; step is where."
    )
    message: str | None = Field(
        None, description="State failed or stopped: the trainer's one line on why."
    )
    updated_at: datetime.datetime | None = Field(
        None,
        description="When the trainer wrote this (UTC, RFC 3339): two reports of two starts "
        "differ even where their figures agree.",
    )

    @computed_field(description="state is succeeded (kept for readers of older files).")
    @property
    def done(self) -> bool:
        return self.state == "succeeded"

    @model_validator(mode="before")
    @classmethod
    def _state_of_older_files(cls, data: Any) -> Any:
        """Files from before `state` said only `done`."""
        if isinstance(data, dict) and "state" not in data and data.get("done") is True:
            return {**data, "state": "succeeded"}
        return data

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class EpochMetrics(OutputFile):
    """One finished epoch."""

    epoch: int = Field(ge=1, description="The epoch, 1-based.")
    train_loss: float = Field(description="Mean loss of its optimizer steps.")
    eval_loss: float = Field(description="Validation loss per label token after it.")
    eval_perplexity: float = Field(description="exp(eval_loss), capped at exp(50).")


class TrainingMetrics(OutputFile):
    """metrics.json: the figures of the best epoch (by validation loss, whose weights are the
    artifacts), the run's throughput, and every epoch's figures."""

    best_epoch: int = Field(ge=1, description="The epoch with the lowest validation loss.")
    train_loss: float = Field(description="The best epoch's mean training loss.")
    eval_loss: float = Field(description="The best epoch's validation loss.")
    eval_perplexity: float = Field(description="The best epoch's validation perplexity.")
    tokens_per_second: float = Field(
        description="Non-padding tokens of all ranks per second spent in training steps (eval "
        "and checkpoints excluded), since the last (re)start."
    )
    train_tokens: int = Field(ge=0, description="Non-padding tokens trained on since then.")
    train_seconds: float = Field(ge=0, description="Seconds spent in training steps since then.")
    padding_fraction: float = Field(
        ge=0, le=1, description="Share of padding in the batches as run, since then."
    )
    steps: int = Field(ge=0, description="Optimizer steps of the whole job.")
    world_size: int = Field(ge=1, description="Training processes (ranks).")
    epochs: list[EpochMetrics] = Field(description="Every epoch, in order.")
    stopped_early: str | None = Field(
        None,
        description="Why training ended before the last epoch (early stopping, a callback's "
        "request); unset when every epoch ran.",
    )
    precision: Literal["bf16", "fp32"] | None = Field(
        None,
        description="The base model's compute precision the run used (the precision "
        "hyperparameter resolved on its devices); unset in metrics of older trainers.",
    )
    test_loss: float | None = Field(
        None,
        description="Loss per label token of the test channel, scored with the best epoch's "
        "weights after training; unset without a test channel.",
    )
    test_perplexity: float | None = Field(
        None, description="exp(test_loss), capped at exp(50); unset without a test channel."
    )
    test_samples: int | None = Field(
        None, ge=0, description="Test samples scored; unset without a test channel."
    )


class SampleAnswer(OutputFile):
    """One line of samples.jsonl: the best epoch's greedy answer to one of the first test
    samples, beside the reference it was scored against."""

    index: int = Field(ge=0, description="The sample's position in the test channel, 0-based.")
    prompt: str = Field(description="What the model was given: the tokens before the labels.")
    reference: str = Field(description="The labelled tokens that follow, as the data has them.")
    answer: str = Field(description="The model's greedy continuation of the prompt.")


class PromptFormat(OutputFile):
    """prompt.json: how the data format turned records into text, so that a prompt given to
    the tuned model (`kubetune generate`) is rendered exactly as its training data was."""

    data_format: str = Field(description="The data format's name, e.g. instruction.")
    prompt: str | None = Field(
        None,
        description="Instruction format: the template's prompt format string over record "
        "fields, e.g. `{instruction}\\n\\n{context}`.",
    )
    completion: str | None = Field(
        None, description="Instruction format: the template's completion format string."
    )
    chat_template: str | None = Field(
        None,
        description="The chat template (Jinja, as transformers' apply_chat_template takes it) "
        "the prompt was rendered through as a user turn; unset: plain text, the tokenizer's "
        "special tokens added.",
    )


class ManifestFile(OutputFile):
    """One artifact file."""

    path: str = Field(description="Relative to the output URI, e.g. adapter/adapter_config.json.")
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(description="SHA-256 of the content, hex.")


class ArtifactManifest(OutputFile):
    """MANIFEST.json: written last, after every artifact is uploaded; its presence means the
    output is complete, and a file it lists must be there with its size."""

    job: JobRecord = Field(description="The job that wrote the artifacts.")
    model: ModelRecord | None = Field(
        None,
        description="The base model the adapter applies to: its hub model_id (adapter/'s "
        "base_model_name_or_path) and the source folder it was read from. Unset in manifests "
        "of trainers before it.",
    )
    merged_dtype: WeightsDtype | None = Field(
        None, description="dtype of merged/'s weights, as its config.json says; unset without it."
    )
    files: list[ManifestFile] = Field(description="Every artifact file, sorted by path.")

    @computed_field(
        description="Bytes per top-level entry of the output, by name: a folder (adapter, "
        'merged) counts all its files, e.g. {"adapter": 3200000, "metrics.json": 623}.'
    )
    @property
    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for f in self.files:
            top = f.path.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + f.size
        return sizes

    @computed_field(description="Bytes of all the artifact files.")
    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)
