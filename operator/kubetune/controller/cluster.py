"""Every Kubernetes API call the operator makes, in one place: the chart's RBAC role lists
exactly these verbs and resources (a test compares them)."""

import base64
import json
import logging
from collections.abc import Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune.api.manifests import prune_nulls
from kubetune.api.v1alpha1 import GROUP, VERSION, ModelHub
from kubetune.render.backends import BACKENDS, Backend

log = logging.getLogger(__name__)

# (API group, resource, verbs): what the code below does; the chart's Role grants these.
API_CALLS = [
    ("kubetune.io", "modelhubs", ["get", "list", "watch", "patch"]),
    ("kubetune.io", "modelhubs/status", ["get", "patch"]),
    ("kubetune.io", "finetunejobs", ["get", "list", "watch", "patch"]),
    ("kubetune.io", "finetunejobs/status", ["get", "patch"]),
    # The training jobs (render/backends.py): only the kinds trainingBackend allows (api_calls).
    ("trainer.kubeflow.org", "trainjobs", ["get", "list", "watch", "create", "patch"]),
    ("kubeflow.org", "pytorchjobs", ["get", "list", "watch", "create", "patch"]),
    ("", "configmaps", ["get", "create"]),
    # get: Secrets named in hubs and jobs; create, patch, delete: only each job's own Secret of
    # presigned model URLs (controller/model_access.py), and only while it is the job's.
    ("", "secrets", ["get", "create", "patch", "delete"]),
    ("", "namespaces", ["get"]),
    ("", "pods", ["list"]),  # the termination message of a failed training job's pod
    ("", "events", ["create"]),  # kopf.event posts core v1 Events
]


def api_calls(kinds: set[str]) -> list:
    """API_CALLS for an operator that may create training jobs of `kinds` only."""
    left_out = {(b.group, b.plural) for b in BACKENDS.values() if b.kind not in kinds}
    return [call for call in API_CALLS if call[:2] not in left_out]


class Cluster:
    """Reads and writes through one kubernetes ApiClient (kubeconfig or in-cluster)."""

    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    # -- the Hubs protocol of kubetune.resolve.hubs --
    def hub(self, namespace: str, name: str) -> ModelHub | None:
        found = self._get(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "modelhubs", name
        )
        return None if found is None else ModelHub.model_validate(prune_nulls(found))

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        found = self._get(self.core.read_namespace, namespace)
        return None if found is None else (found.metadata.labels or {})

    # -- children --
    def create(self, body: dict) -> dict:
        """Create the child, or return the existing one of that name (a retried reconcile)."""
        meta = body["metadata"]
        try:
            if body["kind"] == "ConfigMap":
                self.core.create_namespaced_config_map(meta["namespace"], body)
                created = body
            else:
                backend = BACKENDS[body["kind"]]
                created = self.custom.create_namespaced_custom_object(
                    backend.group, backend.version, meta["namespace"], backend.plural, body
                )
            log.info("%s %s/%s created", body["kind"], meta["namespace"], meta["name"])
            return created
        except ApiException as err:
            if err.status != 409:
                raise
        log.info("%s %s/%s exists already: adopted", body["kind"], meta["namespace"], meta["name"])
        if body["kind"] == "ConfigMap":
            return body
        return self.training_job(BACKENDS[body["kind"]], meta["namespace"], meta["name"])

    def training_job(self, backend: Backend, namespace: str, name: str) -> dict | None:
        return self._get(
            self.custom.get_namespaced_custom_object,
            backend.group, backend.version, namespace, backend.plural, name,
        )

    def set_suspend(self, backend: Backend, namespace: str, name: str, suspend: bool) -> None:
        self.custom.patch_namespaced_custom_object(
            backend.group, backend.version, namespace, backend.plural, name,
            backend.suspend_patch(suspend),
        )

    def pods(self, namespace: str, labels: dict[str, str]) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        # Raw JSON: the client's models refuse statuses that lack a field they call required.
        answer = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        pods = json.loads(answer.data).get("items") or []
        # A test server may ignore the selector; what we were given is what we asked for.
        return [p for p in pods if labels.items() <= (p["metadata"].get("labels") or {}).items()]

    # -- secrets: names checked, values only handed to storage clients, never logged --
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._get(self.core.read_namespaced_secret, name, namespace)
        if found is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}

    # -- the Secret of a job's presigned model URLs (controller/model_access.py) --
    def secret(self, namespace: str, name: str) -> dict | None:
        """The whole Secret as the API server gives it (data base64): for its metadata."""
        try:
            answer = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return json.loads(answer.data)

    def create_secret(self, body: dict) -> None:
        """Create it; ApiException 409 if a Secret of that name exists."""
        meta = body["metadata"]
        self.core.create_namespaced_secret(meta["namespace"], _encoded(body))
        log.info("Secret %s/%s created", meta["namespace"], meta["name"])

    def update_secret(self, body: dict) -> None:
        """Its data and annotations replaced by body's (a merge patch: every key is ours)."""
        meta, encoded = body["metadata"], _encoded(body)
        patch = {"metadata": {"annotations": meta.get("annotations") or {}},
                 "data": encoded["data"]}  # fmt: skip
        self.core.patch_namespaced_secret(meta["name"], meta["namespace"], patch)
        log.info("Secret %s/%s updated", meta["namespace"], meta["name"])

    def delete_secret(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            return
        log.info("Secret %s/%s deleted", namespace, name)

    @staticmethod
    def _get(read, *args):
        try:
            found = read(*args)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return found


def _encoded(body: dict) -> dict:
    """stringData as base64 `data`, as the API server stores it (some servers lack stringData)."""
    plain = body.get("stringData") or {}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in plain.items()}
    return {k: v for k, v in body.items() if k != "stringData"} | {"data": data}
