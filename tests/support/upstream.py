"""Files of the upstream projects the tests check against (the Training Operator's PyTorchJob
CRD, Kubeflow Trainer's CRDs, KServe's InferenceService CRD), taken from their pinned Go modules
(tests/cluster/versions.env) as the cluster build does: never copied into the repo, the same on
every machine that has Go."""

import functools
from pathlib import Path

from tests.cluster.build import BuildError, crd_paths, source_dir


@functools.cache
def pytorchjob_crd() -> Path | None:
    """The PyTorchJob CRD of the pinned Training Operator, or None where there is no Go
    toolchain (or module proxy) to fetch it; `why_not` says which."""
    try:
        return crd_paths()["training-operator"][0]
    except (BuildError, OSError):
        return None


@functools.cache
def trainer_crd(plural: str) -> Path | None:
    """Kubeflow Trainer's CRD for `plural` (trainjobs, clustertrainingruntimes ...), or None
    where there is no Go toolchain to fetch it."""
    try:
        paths = crd_paths().get("trainer") or []
    except (BuildError, OSError):
        return None
    return next((p for p in paths if p.name == f"trainer.kubeflow.org_{plural}.yaml"), None)


@functools.cache
def kserve_crd(plural: str) -> Path | None:
    """KServe's CRD for `plural` (inferenceservices ...), or None where there is no Go
    toolchain (or module proxy) to fetch it; `kserve_why_not` says which."""
    try:
        path = source_dir("KSERVE") / f"config/crd/full/serving.kserve.io_{plural}.yaml"
    except (BuildError, OSError):
        return None
    return path if path.exists() else None


def kserve_why_not() -> str:
    try:
        source_dir("KSERVE")
    except (BuildError, OSError) as err:
        return f"KServe's CRDs are not available: {err}"
    return "KServe's module has no such CRD under config/crd/full/"


def why_not() -> str:
    try:
        paths = crd_paths()
    except (BuildError, OSError) as err:
        return f"the upstream CRDs (Training Operator, Kubeflow Trainer) are not available: {err}"
    if "trainer" not in paths:
        return "Kubeflow Trainer is not among the pinned modules (tests/cluster/versions.env)"
    return ""
