"""Reconcile one ModelHub: every model's source exists (config.json under it, read with the
hub's Secret), references resolve (no cycle, shared, target ready); status says which are not."""

from kubetune.api.manifests import prune_nulls
from kubetune.api.v1alpha1 import HubModel, ModelHub
from kubetune.controller.cluster import Cluster
from kubetune.controller.outputs import credentials_from_secret, store_for
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.hubs import follow
from kubetune.status.conditions import condition, merge
from kubetune.storage import StorageError, join_uri


def reconcile_hub(body: dict, cluster: Cluster, now: str) -> dict:
    hub = ModelHub.model_validate(prune_nulls({**body, "status": None}))
    meta, previous = body["metadata"], body.get("status") or {}
    namespace = meta["namespace"]
    secret = (
        hub.spec.storage.secret_ref.name
        if hub.spec.storage and hub.spec.storage.secret_ref
        else None
    )
    credentials = (
        credentials_from_secret(cluster.secret_data(namespace, secret)) if secret else None
    )
    models = []
    for entry in hub.spec.models:
        ready, message, source = check_entry(hub, entry, cluster, credentials, secret)
        found = {"modelId": entry.model_id, "ready": ready}
        if message:
            found["message"] = message
        if source:
            found["source"] = source
        models.append(found)
    unready = [m for m in models if not m["ready"]]
    if unready:
        first = unready[0]
        ready = condition(
            "Ready",
            False,
            "ModelsNotReady",
            f"{len(unready)} of {len(models)} models not ready; {first['modelId']}: "
            f"{first['message']}",
            meta.get("generation"),
        )
    else:
        ready = condition(
            "Ready", True, "AllModelsReady", f"{len(models)} models ready", meta.get("generation")
        )
    return {
        "conditions": merge(previous.get("conditions"), [ready], now),
        "models": models,
        "modelCount": len(models),
        "readyModels": len(models) - len(unready),
        "observedGeneration": meta.get("generation"),
    }


def check_entry(hub: ModelHub, entry: HubModel, cluster: Cluster, credentials, secret):
    """(ready, message, resolved source) of one entry."""
    namespace = hub.metadata.namespace
    if entry.reference is not None:
        ref = entry.reference
        try:
            resolved = follow(
                namespace,
                f"ModelHub {namespace}/{hub.metadata.name}",
                ref.hub_ref.namespace or namespace,
                ref.hub_ref.name,
                ref.model_id,
                cluster,
            )
        except ResolveError as err:
            return False, err.message, None
        return True, None, resolved.source
    if not entry.source.startswith("s3://"):
        return False, f"{entry.source}: only s3:// sources can be used in a cluster", None
    try:
        store = store_for(entry.source, credentials)
        if not store.exists(join_uri(entry.source, "config.json")):
            return (
                False,
                f"{entry.source}: no config.json there (expected a Hugging Face model folder)",
                None,
            )
    except StorageError as err:
        hint = f" (with Secret {namespace}/{secret})" if secret else ""
        return False, f"{err}{hint}", None
    return True, None, entry.source
