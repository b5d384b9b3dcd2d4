"""pytest plugin (tests/conftest.py loads it): the `cluster` fixture, a full test control plane
once per session, `kube_apiserver` (etcd and kube-apiserver only, seconds to start), planes with
one generation of Kubeflow training (`training_operator_cluster`: PyTorchJob only;
`trainer_cluster`: TrainJob only), each started only if a test asks, and the `cluster` marker,
whose tests skip only where neither Go nor KUBEBUILDER_ASSETS is present."""

from pathlib import Path

import pytest

from tests.cluster import build

REPO = Path(__file__).resolve().parents[2]
OUR_CRDS = sorted((REPO / "crds").glob("*.yaml"))


def pytest_collection_modifyitems(config, items):
    if build.go_command() or build.envtest_assets():
        return
    skip = pytest.mark.skip(reason="needs Go or KUBEBUILDER_ASSETS to run a control plane")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster(request):
    """etcd, kube-apiserver, controller-manager, scheduler, kwok nodes, the Training Operator,
    the Trainer and JobSet, Kueue, with crds/*.yaml applied. Builds the binaries first if needed
    (minutes, once)."""
    yield from _control_plane(request, crds=OUR_CRDS)


@pytest.fixture(scope="session")
def training_operator_cluster(request):
    """As `cluster`, with the Training Operator (PyTorchJob) and no Trainer, JobSet or their
    CRDs: a cluster of Kubeflow's v1 generation."""
    from tests.cluster.controlplane import TRAINING_OPERATOR_ONLY

    yield from _control_plane(request, components=TRAINING_OPERATOR_ONLY, crds=OUR_CRDS)


@pytest.fixture(scope="session")
def trainer_cluster(request):
    """As `cluster`, with the Trainer and JobSet (TrainJob) and no Training Operator or
    PyTorchJob CRD: a cluster of Kubeflow's v2 generation."""
    from tests.cluster.controlplane import TRAINER_ONLY

    yield from _control_plane(request, components=TRAINER_ONLY, crds=OUR_CRDS)


@pytest.fixture(scope="session")
def kube_apiserver(request):
    """etcd and kube-apiserver alone: no controllers, so no pods run and no namespace is ever
    finalized; for tests of what the API server itself does (validation, RBAC, watches)."""
    yield from _control_plane(request, components=(), crds=OUR_CRDS)


def _control_plane(request, **options):
    if options.get("components", True) and not build.go_command():
        pytest.skip("needs Go to build kwok, the Training Operator, the Trainer and Kueue")
    from tests.cluster.controlplane import ControlPlane  # imports kubernetes: only when used

    # Shown as it happens: a first build of the binaries takes many minutes.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        plane = ControlPlane(**options).start()
    try:
        yield plane
    finally:
        failed = request.session.testsfailed > 0
        plane.stop(keep=failed)  # on failure, the logs stay for a look
        if failed:
            print(f"\ncontrol plane logs kept in {plane.logs}")
