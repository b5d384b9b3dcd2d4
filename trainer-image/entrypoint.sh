#!/usr/bin/env bash
# Trainer container entrypoint: kubetune_trainer.launch runs torchrun with the topology the
# training job puts in the environment (PyTorchJob: MASTER_ADDR/MASTER_PORT; TrainJob:
# PET_MASTER_ADDR/PET_MASTER_PORT; both PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK), then
# exits by the exit-code contract (docs/trainer-config.md). Extra arguments go to the trainer.
set -euo pipefail

# The root filesystem is read-only: temporary files (torchrun's own logs among them) and the
# home folder live on the scratch emptyDir, which starts empty.
mkdir -p "${TMPDIR:-/tmp}" "${HOME:-/tmp}"

# exec: the launcher is the process Kubernetes signals; it forwards SIGTERM to torchrun, which
# forwards it to every worker (they checkpoint and exit).
exec python -m kubetune_trainer.launch "$@"
