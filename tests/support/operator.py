"""The operator as `kubetune operator` builds it (our registry, a Cluster on the kubernetes
client, Prometheus metrics), run by kopf in the test's own event loop against the test API
server (or a real kube-apiserver: tests.support.realserver): for tests that need its handlers,
not its process (tests.support.processes)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import kubernetes

from kubetune.config import OperatorConfig
from kubetune.controller.cluster import Cluster
from kubetune.controller.finetunejob import PYTORCHJOB_ONLY, Backends
from kubetune.controller.handlers import build_registry
from kubetune.controller.metrics import Metrics
from tests.support.apiserver import ApiServer, run_operator


@asynccontextmanager
async def operator_in_loop(
    api: ApiServer, config: OperatorConfig, backends: Backends = PYTORCHJOB_ONLY
) -> AsyncIterator[Metrics]:
    """Running until the block ends; yields its metrics. `backends`: what start-up discovery
    would have decided (controller/discovery.py)."""
    client_config = kubernetes.client.Configuration(host=api.url)
    client_config.api_key = {"authorization": f"Bearer {api.token}"}
    if api.ca_file:
        client_config.ssl_ca_cert = str(api.ca_file)
    metrics = Metrics()
    cluster = Cluster(kubernetes.client.ApiClient(client_config))
    registry = build_registry(config, cluster, metrics, backends)
    async with run_operator(api, registry, clusterwide=True):
        yield metrics
