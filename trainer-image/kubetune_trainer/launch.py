"""The trainer image's entrypoint: torchrun with the topology the training job puts in the
environment, then one exit code for the pod (the contract in kubetune.api.v1alpha1.exits) and
the failing rank's one-line message as the pod's termination message.

torchrun exits 1 whatever its workers did, so each worker leaves its outcome in a file of
KUBETUNE_EXIT_DIR (see `record_exit`) and this process decides from those files.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubetune.api.v1alpha1.exits import (
    TERMINATION_MESSAGE_LIMIT,
    TERMINATION_MESSAGE_PATH,
    ExitCode,
    retryable,
)
from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH

EXIT_DIR = "KUBETUNE_EXIT_DIR"
FORWARDED = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Topology:
    """torchrun's arguments from the pod's env: a PyTorchJob sets MASTER_ADDR/MASTER_PORT, a
    Kubeflow Trainer TrainJob PET_MASTER_ADDR/PET_MASTER_PORT; both set the other PET_*."""

    nnodes: str
    nproc_per_node: str
    node_rank: str
    master_addr: str
    master_port: str
    config: str
    termination_log: Path

    @classmethod
    def from_env(cls, env) -> "Topology":
        return cls(
            nnodes=env.get("PET_NNODES", "1"),
            nproc_per_node=env.get("PET_NPROC_PER_NODE", "1"),
            node_rank=env.get("PET_NODE_RANK", "0"),
            master_addr=env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=env.get("PET_MASTER_PORT") or env.get("MASTER_PORT", "29500"),
            config=env.get("KUBETUNE_CONFIG", DEFAULT_PATH),
            termination_log=Path(env.get("KUBETUNE_TERMINATION_LOG", TERMINATION_MESSAGE_PATH)),
        )

    def torchrun(self, extra: list[str]) -> list[str]:
        return [
            "torchrun",
            f"--nnodes={self.nnodes}",
            f"--nproc_per_node={self.nproc_per_node}",
            f"--node_rank={self.node_rank}",
            f"--master_addr={self.master_addr}",
            f"--master_port={self.master_port}",
            "-m",
            "kubetune_trainer.train",
            "--config",
            self.config,
            *extra,
        ]


def main(argv: list[str] | None = None) -> int:
    topology = Topology.from_env(os.environ)
    with tempfile.TemporaryDirectory(prefix="kubetune-exits-") as folder:
        command = topology.torchrun(sys.argv[1:] if argv is None else argv)
        child = subprocess.Popen(command, env={**os.environ, EXIT_DIR: folder})
        for signum in FORWARDED:  # Kubernetes signals this process; torchrun tells the workers
            signal.signal(signum, lambda s, _: child.send_signal(s))
        returncode = child.wait()
        code, message = outcome(returncode, Path(folder))
    if message:
        print(f"kubetune: exit {code}: {message}", file=sys.stderr, flush=True)
        termination_message(topology.termination_log, message)
    return code


def record_exit(folder: Path | None, rank: int, code: int, message: str) -> None:
    """A worker's outcome, for `outcome` (no-op outside the launcher)."""
    if folder is None:
        return
    record = {"rank": rank, "code": int(code), "message": message}
    partial = folder / f".rank-{rank}.json"
    partial.write_text(json.dumps(record))
    partial.replace(folder / f"rank-{rank}.json")


def outcome(returncode: int, folder: Path) -> tuple[int, str]:
    """The pod's exit code and message: a permanent failure of any rank wins (a user error's
    message first: it says what to fix), then a retryable one; torchrun's own code when no
    worker said anything."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("rank-*.json"))]
    failed = [r for r in records if r["code"] != ExitCode.SUCCEEDED]
    if returncode == 0 and not failed:
        return ExitCode.SUCCEEDED, ""
    permanent = [r for r in failed if not retryable(r["code"])]
    if permanent:
        first = min(permanent, key=lambda r: (r["code"] != ExitCode.USER_ERROR, r["rank"]))
        return first["code"], first["message"]
    if failed:
        first = min(failed, key=lambda r: r["rank"])
        return first["code"], first["message"]
    if returncode < 0:  # torchrun itself ended by a signal
        return 128 - returncode, f"torchrun ended by {signal.Signals(-returncode).name}"
    return ExitCode.INFRASTRUCTURE, (
        f"a training process ended without reporting why (torchrun exit {returncode}): "
        "killed for memory (OOM), or crashed; see the pod's log"
    )


def termination_message(path: Path, message: str) -> None:
    """Kubernetes shows it in the pod's status; the file exists only in a pod (kubelet)."""
    if path.exists():
        data = message.encode()[:TERMINATION_MESSAGE_LIMIT]
        path.write_bytes(data.decode(errors="ignore").encode())


if __name__ == "__main__":
    sys.exit(main())
