#!/usr/bin/env bash
# Trainer container entrypoint: torchrun with the topology a Kubeflow PyTorchJob puts in the
# environment, running kubetune_trainer.train on the mounted TrainerConfig. Extra arguments go to
# the trainer. Defaults give one process on one node, for `docker run` and local debugging.
set -euo pipefail

# The root filesystem is read-only: temporary files (torchrun's own logs among them) and the
# home folder live on the scratch emptyDir, which starts empty.
mkdir -p "${TMPDIR:-/tmp}" "${HOME:-/tmp}"

# exec: torchrun replaces this shell, so the SIGTERM Kubernetes sends on preemption or deletion
# reaches torchrun itself, which forwards it to every worker (they checkpoint and exit).
exec torchrun \
    --nnodes="${PET_NNODES:-1}" \
    --nproc_per_node="${PET_NPROC_PER_NODE:-1}" \
    --node_rank="${PET_NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${MASTER_PORT:-29500}" \
    -m kubetune_trainer.train \
    --config "${KUBETUNE_CONFIG:-/etc/kubetune/config.json}" \
    "$@"
