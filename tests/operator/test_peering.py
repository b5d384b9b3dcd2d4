"""Two replicas, as the chart runs them: two `kubetune operator` processes (the real CLI, with
peering) against the test API server. Exactly one acts; when it stops, the other takes over."""

import asyncio

import pytest
import pytest_asyncio

from tests.operator.test_operator import (  # noqa: F401 (fixtures, requested by name)
    OTHER,
    PLATFORM,
    TEAM,
    hub,
    job,
    models,
)
from tests.support.apiserver import ApiServer, apiserver_fixture  # noqa: F401
from tests.support.processes import start_operator, stop_operator
from tests.support.s3 import s3_endpoint_fixture, s3_server_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio

PEERING = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "kubetune"}}  # fmt: skip  # noqa: E501
CREATED = "PyTorchJob team-a/{} created"  # what a replica logs on a 201 (controller/cluster.py)


@pytest_asyncio.fixture
async def cluster(apiserver: ApiServer) -> ApiServer:
    """The test API server only: this test counts its requests (the real server's peering is
    tested in tests/cluster/test_faults.py)."""
    for namespace in (PLATFORM, TEAM, OTHER):
        await apiserver.create_namespace(namespace)
    return apiserver


def pytorchjob_creates(api: ApiServer, code: int | None = None) -> list:
    return [
        c
        for c in api.requests
        if c.method == "POST" and c.path.endswith("/pytorchjobs") and code in (None, c.status)
    ]


def created_by(log, names: list[str]) -> list[str]:
    return [name for name in names if CREATED.format(name) in log.read_text()]


async def all_children(api: ApiServer, names: list[str], timeout: float) -> None:
    for name in names:
        await api.wait_for("PyTorchJob", TEAM, name, timeout=timeout)


async def test_two_replicas_one_acts_and_the_other_takes_over(cluster, models, tmp_path):  # noqa: F811
    await cluster.create(PEERING)
    await cluster.create(hub(models))
    logs = [tmp_path / "replica-a.log", tmp_path / "replica-b.log"]
    replicas = [start_operator(cluster, log, "--log-level", "INFO") for log in logs]
    try:
        # Until each replica has seen the other in the peering object, both may act (kopf;
        # harmless, as children are created once and adopted on 409): wait for both there.
        both = lambda o: len(o.get("status") or {}) == 2  # noqa: E731 (peers by id)
        await cluster.wait_for("ClusterKopfPeering", None, "kubetune", both, timeout=30)
        await asyncio.sleep(1)  # and for each to read the other's entry from its watch
        first = [f"first-{i}" for i in range(8)]
        for name in first:
            await cluster.create(job(name, output=f"s3://out/{name}/"))
        await all_children(cluster, first, timeout=60)
        await asyncio.sleep(2)  # a second replica acting would have created its copies by now
        acted = [i for i, log in enumerate(logs) if created_by(log, first)]
        assert all(replica.poll() is None for replica in replicas), "a replica died"
        assert len(acted) == 1, [log.read_text()[-2000:] for log in logs]
        assert len(pytorchjob_creates(cluster)) == len(first)  # not one create answered 409

        active, standby = acted[0], 1 - acted[0]
        await stop_operator(replicas[active])
        later = [f"later-{i}" for i in range(4)]
        for name in later:
            await cluster.create(job(name, output=f"s3://out/{name}/"))
        await all_children(cluster, later, timeout=60)
        assert created_by(logs[standby], later) == later
        # On taking over, the standby resumes every job: the first ones' children exist, so
        # a create it sends for one of them is answered 409 and adopted, never a second 201.
        assert len(pytorchjob_creates(cluster, 201)) == len(first) + len(later)
    finally:
        for replica in replicas:
            if replica.poll() is None:
                await stop_operator(replica)
