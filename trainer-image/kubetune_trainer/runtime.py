"""Where this process runs: read once from the environment torchrun / PyTorchJob set."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Runtime:
    """Process placement and local folders. Nothing else in the trainer reads os.environ."""

    rank: int  # RANK: this process among all of the job's processes
    world_size: int  # WORLD_SIZE: nodes x processes per node
    local_rank: int  # LOCAL_RANK: this process among the node's, = its GPU index
    scratch: Path  # KUBETUNE_SCRATCH: downloads and staging; an emptyDir in the pod
    device: torch.device

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
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0
