"""Files of the upstream projects the tests check against (the Training Operator's PyTorchJob
CRD), taken from their pinned Go modules (tests/cluster/versions.env) as the cluster build does:
never copied into the repo, the same on every machine that has Go."""

import functools
from pathlib import Path

from tests.cluster.build import BuildError, crd_paths


@functools.cache
def pytorchjob_crd() -> Path | None:
    """The PyTorchJob CRD of the pinned Training Operator, or None where there is no Go
    toolchain (or module proxy) to fetch it; `why_not` says which."""
    try:
        return crd_paths()["training-operator"][0]
    except (BuildError, OSError):
        return None


def why_not() -> str:
    try:
        crd_paths()
    except (BuildError, OSError) as err:
        return f"the Training Operator's PyTorchJob CRD is not available here: {err}"
    return ""
