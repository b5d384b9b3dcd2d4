"""The trainer's scratch volume: what its writes need (the bytes of the tensors it saves), and
a finished job's folder removed. The room check itself (room_for, NoSpace) is
kubetune.storage's, which downloads there too."""

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in obj (nested dicts, lists): what saving it takes, at least."""
    import torch  # here: a module that needs no torch to import

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def remove_job_folder(folder: Path, runtime) -> None:
    """Remove a job's scratch folder (model copy, data, staging, checkpoints) once its
    artifacts are complete. Only a resume needs it, and a finished job never resumes; a
    pod's emptyDir goes with the pod, but local mode and a reused node volume keep it. The
    node's ranks share the folder: its local rank 0 removes it, after every rank is done."""
    if runtime.local_rank != 0 or not folder.is_dir():
        return
    held = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    shutil.rmtree(folder, ignore_errors=True)
    log.info("scratch: removed %s (%.1f MB): the job is complete", folder, held / 1e6)
