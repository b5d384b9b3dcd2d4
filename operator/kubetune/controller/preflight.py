"""Before kopf starts: can the API server be reached, and can replicas peer? Each problem is
one line (kopf would retry an unreachable server in silence, or wait for missing peering CRDs
handling nothing)."""

import logging
import time

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError


def unreachable(api, attempts: int = 3) -> str | None:
    """Why the API server cannot be used (one line), or None: a few tries over ~10 s, so a
    wrong kubeconfig fails fast while a server that is starting gets its moment."""
    host = api.configuration.host
    # urllib3 warns of each of its own retries: the one line below says it all.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    for attempt in range(attempts):
        try:
            client.VersionApi(api).get_code(_request_timeout=5)
            return None
        except ApiException as err:  # it answered: reachable (401/403 show up in kopf's log)
            if err.status and err.status < 500:
                return None
            reason = f"answered {err.status} {err.reason}"
        except HTTPError as err:
            reason = " ".join(str(getattr(err, "reason", None) or err).split())
        if attempt + 1 < attempts:
            time.sleep(2)
    return f"cannot reach the Kubernetes API server at {host}: {reason}"


def peering_served(api, name: str, namespaces: list[str]) -> bool:
    """Whether replicas can peer: kopf's peering CRDs (the chart installs them) and the peering
    object `name` (cluster-wide, or in each watched namespace). Without either kopf would wait
    in silence, handling nothing: run standalone and say so."""
    try:
        groups = client.ApisApi(api).get_api_versions().groups
        if not any(g.name == "kopf.dev" for g in groups):
            missing = "no kopf peering CRDs (kopf.dev) on this cluster"
        else:
            missing = _missing_peering(client.CustomObjectsApi(api), name, namespaces)
    except (ApiException, HTTPError):  # discovery trouble: let kopf try peering as asked
        return True
    if not missing:
        return True
    logging.warning(
        "%s: running as the only replica. For two replicas (one acts, one stands by), install "
        "the chart (helm install kubetune charts/kubetune), which ships the CRDs and creates "
        "the peering object; to say so and silence this, pass --standalone",
        missing,
    )
    return False


def _missing_peering(custom: client.CustomObjectsApi, name: str, namespaces: list[str]) -> str:
    """Which peering object is absent ('' when all are there). Listed, not read: the chart's
    role grants list/watch/patch on peerings, as kopf needs."""
    selector = f"metadata.name={name}"
    if not namespaces:
        found = custom.list_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", field_selector=selector
        )
        return "" if _named(found, name) else f"no ClusterKopfPeering {name!r}"
    for namespace in namespaces:
        found = custom.list_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", field_selector=selector
        )
        if not _named(found, name):
            return f"no KopfPeering {name!r} in namespace {namespace}"
    return ""


def _named(listing: dict, name: str) -> bool:  # a server may ignore the field selector
    return any(item["metadata"]["name"] == name for item in listing.get("items") or [])
