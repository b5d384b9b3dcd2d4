"""The kind end-to-end run (tests/chart/kind_e2e.py) as a test: only where Docker and kind are
installed (the `kind` marker; tests/conftest.py skips it elsewhere). It takes many minutes.
Its manifests are checked everywhere."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune.api.manifests import problems, read_documents
from tests.chart.kind_e2e import HUB, JOB

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kind
def test_cpu_finetunejob_succeeds_on_kind():
    done = subprocess.run([sys.executable, "-m", "tests.chart.kind_e2e"], cwd=REPO, timeout=5400)
    assert done.returncode == 0, "kind e2e failed: see its output above"


def test_e2e_manifests_are_valid():
    """The hub and job the kind run applies pass the API's validation (runs everywhere)."""
    for manifest in (HUB, JOB):
        (doc,) = read_documents("kind_e2e.py", yaml.safe_dump(manifest))
        assert problems(doc) == [], manifest["kind"]
