"""A finished job's artifacts as a cluster serves them: which weights (merged/, or the base model
plus adapter/), at which s3:// URIs, under which name, with what resources. The one module of
serving/ that reads storage; the renderers take the `Serving` it returns and nothing else."""

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from kubetune.api.v1alpha1 import TrainerConfig
from kubetune.api.v1alpha1.common import PATTERN_RULES
from kubetune.api.v1alpha1.finetunejob import MAX_NAME_LENGTH, NAME_PATTERN
from kubetune.api.v1alpha1.outputs import ADAPTER, CONFIG, MERGED, ArtifactManifest
from kubetune.local import summary
from kubetune.local.files import LocalError
from kubetune.storage import S3, StorageError, join_uri, open_store

Weights = Literal["merged", "adapter"]
WEIGHTS: tuple[Weights, ...] = ("merged", "adapter")
# vLLM preallocates LoRA weights for a fixed set of ranks; an adapter of rank r needs
# --max-lora-rank at least r, and vLLM's default (16) refuses the lora_r 32 or 64 users pick.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class ServingError(LocalError):
    """Something to fix before the model can be served, one line each."""


@dataclass(frozen=True)
class FinishedJob:
    """What a finished job left under its output URI, as far as serving needs it."""

    uri: str  # the output URI, ending in /
    manifest: ArtifactManifest
    config: TrainerConfig

    def exported(self, folder: str) -> bool:
        return any(f.path.startswith(f"{folder}/") for f in self.manifest.files)


@dataclass(frozen=True)
class Resources:
    """One serving replica's share of a node; limits equal requests (Guaranteed QoS)."""

    gpus: int
    cpu: str
    memory: str


@dataclass(frozen=True)
class Serving:
    """Everything the renderers need: no storage, no defaults left to apply."""

    name: str  # of every object, and the model name clients ask for
    namespace: str
    job: str  # the FineTuneJob's namespace/name
    job_uid: str
    weights: Weights
    artifacts: str  # s3:// folder of merged/ or adapter/, ending in /
    base: str | None  # --weights adapter: s3:// folder of the base model, ending in /
    max_lora_rank: int | None  # --weights adapter: the smallest vLLM rank >= the job's lora_r
    secret: str | None  # holds AWS_* keys; referenced, never read
    resources: Resources
    max_model_len: int | None

    @property
    def base_name(self) -> str:
        """--weights adapter: the base model's own name; the job's name is the adapter's."""
        return f"{self.name}-base"


def read_finished(uri: str) -> FinishedJob:
    """MANIFEST.json and config.json of a finished job; summary.NotFinished if it has not
    finished there, LocalError for storage or file problems."""
    outputs = summary.read_outputs(uri)
    config_uri = join_uri(uri, CONFIG)
    try:
        text = open_store(uri).read_bytes(config_uri)
        config = TrainerConfig.model_validate_json(text)
    except StorageError as err:
        raise LocalError(str(err)) from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(file)"
        rule = PATTERN_RULES.get(first.get("ctx", {}).get("pattern"), first["msg"])
        raise LocalError(f"{config_uri}: not a TrainerConfig: {where}: {rule}") from None
    return FinishedJob(join_uri(uri, ""), outputs.manifest, config)


def plan(
    job: FinishedJob,
    *,
    weights: Weights | None = None,
    name: str | None = None,
    namespace: str | None = None,
    base_uri: str | None = None,
    secret: str | None = None,
    resources: Resources,
    max_model_len: int | None = None,
) -> Serving:
    """What to serve, checked: ServingError with one line per problem."""
    problems = []
    if not job.uri.startswith(S3):
        local = job.uri.removeprefix("file://")
        problems.append(
            f"OUTPUT_URI {job.uri}: a cluster cannot read this machine's files; copy the "
            f"folder to S3 (aws s3 sync {local} s3://BUCKET/PREFIX/) and pass that s3:// URI"
        )
    chosen = weights or ("merged" if job.exported(MERGED) else "adapter")
    if not job.exported(MERGED if chosen == "merged" else ADAPTER):
        why = "train with merge_weights: true" if chosen == "merged" else "not a LoRA run"
        problems.append(
            f"--weights {chosen}: the job exported no {chosen}/ ({job.uri}MANIFEST.json lists "
            f"none; {why})"
        )
    base = rank = None
    if chosen == "adapter":
        base, rank, more = _adapter_base(job, base_uri)
        problems += more
    elif base_uri:
        problems.append(f"--base-uri {base_uri}: only --weights adapter loads a base model")
    served_name = name or job.config.job.name
    if len(served_name) > MAX_NAME_LENGTH or not re.match(NAME_PATTERN, served_name):
        problems.append(
            f"--name {served_name!r}: must be a DNS-1035 label (lowercase letters, digits and "
            f"'-', starting with a letter) of at most {MAX_NAME_LENGTH} characters"
        )
    if problems:
        raise ServingError(*problems)
    folder = MERGED if chosen == "merged" else ADAPTER
    return Serving(
        name=served_name,
        namespace=namespace or job.config.job.namespace,
        job=f"{job.config.job.namespace}/{job.config.job.name}",
        job_uid=job.config.job.uid,
        weights=chosen,
        artifacts=join_uri(job.uri, folder, ""),
        base=base,
        max_lora_rank=rank,
        secret=secret,
        resources=resources,
        max_model_len=max_model_len,
    )


def _adapter_base(job: FinishedJob, base_uri: str | None) -> tuple[str, int, list[str]]:
    """The base model's s3:// folder and the LoRA rank to allow, with the problems found."""
    problems = []
    model = job.config.model
    base = base_uri or model.source
    if not base.startswith(S3):
        problems.append(
            f"--weights adapter: the base model {model.model_id} is at {base} "
            f"({job.uri}{CONFIG} model.source), which a cluster cannot read; pass --base-uri "
            "s3://... where a copy of it is"
            + (", or serve --weights merged" if job.exported(MERGED) else "")
        )
    lora_r = job.config.hyperparameters.lora_r
    rank = next((r for r in VLLM_LORA_RANKS if r >= lora_r), None)
    if rank is None:
        problems.append(
            f"--weights adapter: lora_r {lora_r} ({job.uri}{CONFIG}) is above the largest "
            f"rank vLLM serves ({VLLM_LORA_RANKS[-1]}); serve --weights merged"
        )
    return join_uri(base, ""), rank or 0, problems
