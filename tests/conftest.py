"""Markers for what this machine may lack: `gpu` tests need CUDA, `kind` tests need Docker and
kind. They are skipped, with the reason, where those are absent; everything else always runs.
`soak` tests, the long variants of the reliability suites, run only with --soak (`make soak`)."""

import shutil

import pytest

pytest_plugins = ["tests.cluster.fixtures"]


def pytest_collection_modifyitems(config, items):
    missing = {}
    if not _cuda():
        missing["gpu"] = "needs a CUDA GPU; none here"
    if not (shutil.which("docker") and shutil.which("kind")):
        missing["kind"] = "needs Docker and kind; not installed here"
    if not config.getoption("--soak"):
        missing["soak"] = "a long soak run; `make soak` runs it"
    for item in items:
        for marker, reason in missing.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files from the current output"
    )
    parser.addoption("--soak", action="store_true", help="also run the long `soak` variants")
