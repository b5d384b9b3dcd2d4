"""The cluster as the operator's watches last saw it: hubs and training jobs come from kopf
indexes instead of a GET per reconcile (at 1,000 jobs those GETs were a quarter of the API
traffic). Everything else, and any hub the index has not seen, is read from the API server."""

import copy
from collections.abc import Mapping

import kopf

from kubetune.api.manifests import prune_nulls
from kubetune.api.v1alpha1 import ModelHub
from kubetune.controller.cluster import Cluster
from kubetune.render.backends import Backend

Key = tuple[str, str]  # (namespace, name)


def index_by_name(namespace: str, name: str, body: kopf.Body, **_) -> dict[Key, dict]:
    """The kopf index function for hubs and training jobs: the whole object by its name."""
    return {(namespace, name): dict(body)}


class Seen:
    def __init__(self, cluster: Cluster, hubs: kopf.Index, jobs: dict[str, kopf.Index]):
        """`jobs`: by kind, an index of our training jobs of each kind the cluster serves."""
        self.cluster, self._hubs, self._jobs = cluster, hubs, jobs

    def hub(self, namespace: str, name: str) -> ModelHub | None:
        found = _only(self._hubs, (namespace, name))
        if found is None or not _checked(found):
            # Another namespace than those watched, or a hub created or changed a moment ago:
            # its checks may be written already, and waiting for the watch costs a backoff.
            return self.cluster.hub(namespace, name)
        return ModelHub.model_validate(prune_nulls(found))

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.cluster.namespace_labels(namespace)

    def training_job(self, backend: Backend, namespace: str, name: str) -> dict | None:
        """None also for one created a moment ago and not yet seen: creating it again is safe
        (Cluster.create adopts on 409), a GET for every job's first reconcile is not free. None
        for a kind the cluster does not serve."""
        found = _only(self._jobs.get(backend.kind, {}), (namespace, name))
        return None if found is None else copy.deepcopy(found)  # callers may change their copy

    def __getattr__(self, attr: str):
        return getattr(self.cluster, attr)  # create, secret_data, set_suspend


def _checked(hub: dict) -> bool:
    """The hub's status speaks of its current spec."""
    observed = (hub.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == hub["metadata"].get("generation")


def _only(index: kopf.Index, key: Key) -> dict | None:
    return next(iter(index.get(key, ())), None)
