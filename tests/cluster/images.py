"""What an image brings to a container the local kubelet (kubelet.py) runs: nothing is pulled,
an image is only its ENTRYPOINT, CMD, ENV and WORKDIR, and the command that runs it here."""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Image:
    """What an image brings to a container that runs it: ENTRYPOINT, CMD, ENV, WORKDIR."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"

    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()


def from_dockerfile(dockerfile: Path, entrypoint: list[str], path: str) -> Image:
    """An image as its Dockerfile builds it: its ENV (KEY=VALUE form) and last WORKDIR, with
    the `entrypoint` and PATH this machine runs it by."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())  # continued lines joined
    env, workdir = {}, "/"
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["ENV"]:
            env.update(pair.split("=", 1) for pair in words[1:] if "=" in pair)
        elif words[:1] == ["WORKDIR"]:
            workdir = words[1]
    return Image(entrypoint=entrypoint, env={**env, "PATH": path}, workdir=workdir)
