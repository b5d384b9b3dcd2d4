"""Where this process runs: read once from the environment torchrun / PyTorchJob set."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kubetune.api.v1alpha1.model_urls import URLS_ENV
from kubetune_trainer.trainer_status import Endpoint

CHANNELS = ("model", "data", "output")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# boto3 Session / client arguments and the variable suffix each is read from.
S3_SETTINGS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "region_name": "AWS_DEFAULT_REGION",
    "endpoint_url": "AWS_ENDPOINT_URL",
}


@dataclass(frozen=True)
class Runtime:
    """Process placement and local folders. Nothing else in the trainer reads os.environ."""

    rank: int  # RANK: this process among all of the job's processes
    world_size: int  # WORLD_SIZE: nodes x processes per node
    local_rank: int  # LOCAL_RANK: this process among the node's, = its GPU index
    scratch: Path  # KUBETUNE_SCRATCH: downloads and staging; an emptyDir in the pod
    device: torch.device
    log_level: str  # KUBETUNE_LOG_LEVEL: the trainer's own logs; DEBUG adds a line per step
    exit_dir: Path | None = None  # KUBETUNE_EXIT_DIR: where the launcher reads how ranks ended
    # KUBETUNE_MODEL_URLS: the operator's presigned model URLs (a hub with storage.access:
    # presigned); set, the model comes from them and not with the model channel's credentials.
    model_urls: Path | None = None
    # Per storage channel (model, data, output): S3 settings from KUBETUNE_<CHANNEL>_AWS_*,
    # which the operator sets from each channel's Secret with an envFrom prefix. A channel
    # without them uses boto3's usual chain: plain AWS_* variables, IRSA, pod identity.
    credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    # KUBEFLOW_TRAINER_SERVER_*: where Kubeflow Trainer takes progress (its TrainJobStatus gate).
    trainer_status: Endpoint | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Runtime":
        env = os.environ if env is None else env
        local_rank = int(env.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=int(env.get("WORLD_SIZE", "1")),
            local_rank=local_rank,
            scratch=Path(env.get("KUBETUNE_SCRATCH", "/tmp/kubetune")),
            device=device,
            log_level=log_level(env.get("KUBETUNE_LOG_LEVEL", "INFO")),
            exit_dir=Path(env["KUBETUNE_EXIT_DIR"]) if env.get("KUBETUNE_EXIT_DIR") else None,
            model_urls=Path(env[URLS_ENV]) if env.get(URLS_ENV) else None,
            credentials={c: channel_credentials(env, c) for c in CHANNELS},
            trainer_status=Endpoint.from_env(env),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def channel_credentials(env, channel: str) -> dict[str, str]:
    """KUBETUNE_DATA_AWS_ACCESS_KEY_ID etc. as boto3 arguments; empty when none are set."""
    prefix = f"KUBETUNE_{channel.upper()}_"
    found = {arg: env.get(prefix + name) for arg, name in S3_SETTINGS.items()}
    if not found["region_name"]:
        found["region_name"] = env.get(prefix + "AWS_REGION")
    return {arg: value for arg, value in found.items() if value}


def log_level(name: str) -> str:
    if name.upper() not in LOG_LEVELS:
        raise ValueError(f"KUBETUNE_LOG_LEVEL: {name!r} is not one of {', '.join(LOG_LEVELS)}")
    return name.upper()
