"""Room on a local volume (the trainer's scratch, an emptyDir in the pod): a write that does not
fit ends the run with one line naming the folder, the space needed and the space free. What it
half-wrote is removed, and never uploaded: the caller's manifest is not reached."""

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MiB = 1024 * 1024
FULL = (errno.ENOSPC, errno.EDQUOT)
# torch.save and safetensors report a full disk as RuntimeError / SafetensorError with no errno
# ("unexpected pos 576 vs 534"): a write that failed with less than this left was out of space.
NEARLY_FULL = MiB


class NoSpace(Exception):
    """The scratch volume cannot hold what must be written there."""

    def __init__(self, folder: Path, what: str, needed: int, free: int, started: bool):
        super().__init__(folder, what, needed, free, started)
        self.folder, self.what, self.needed, self.free = folder, what, needed, free
        self.started = started  # False: refused before writing; True: a write failed

    def __str__(self) -> str:
        needed, free = f"{self.needed / MiB:.1f} MiB", f"{self.free / MiB:.1f} MiB"
        when = "when writing began" if self.started else "now"
        return (
            f"{self.folder}: no space left on device for {self.what}: at least {needed} needed, "
            f"{free} free {when}; give the scratch volume (KUBETUNE_SCRATCH, the pod's emptyDir "
            "sizeLimit) more room"
        )


@contextmanager
def room_for(folder: Path, what: str, needed: int) -> Iterator[None]:
    """Run a block that writes about `needed` bytes under folder. Refused at once when the
    volume has less free; if a write fails on a full volume, folder is removed (freeing what
    it holds for the next try) and NoSpace says so."""
    free = free_bytes(folder)
    if free < needed:
        raise NoSpace(folder, what, needed, free, started=False)
    try:
        yield
    except Exception as err:
        if getattr(err, "errno", None) not in FULL and free_bytes(folder) >= NEARLY_FULL:
            raise  # not a full disk: the caller's error to report
        shutil.rmtree(folder, ignore_errors=True)
        raise NoSpace(folder, what, needed, free, started=True) from None


def free_bytes(path: Path) -> int:
    """Free bytes on the volume that holds path, or would hold it once created."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
