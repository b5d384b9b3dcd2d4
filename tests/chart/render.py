"""Render the chart with the real helm binary (tests/chart/helm.py) and read the result."""

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import HelmUnavailable, helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
RELEASE, NAMESPACE = "kubetune", "kubetune-system"


_unavailable: list[str] = []  # why the download failed, so it is tried once per run


def helm() -> Path:
    """The helm binary, or a skip that says why there is none (only when it cannot download)."""
    if _unavailable:
        pytest.skip(_unavailable[0])
    try:
        return helm_binary()
    except HelmUnavailable as err:
        _unavailable.append(str(err))
        pytest.skip(str(err))


def run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120)


def template(*args: str) -> str:
    """`helm template` of the chart as release kubetune in kubetune-system; the YAML text."""
    done = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@functools.cache
def rendered(*args: str) -> str:
    """template(), once per set of arguments: most tests read the same two renderings."""
    return template(*args)


DEFAULT: tuple[str, ...] = ()
ALL = ("--values", str(ALL_OPTIONS))


def objects(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict], kind: str, namespace: str | None = None) -> list[dict]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[dict], kind: str) -> dict:
    (found,) = find(docs, kind)
    return found
