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


def peering_served(api) -> bool:
    """Whether the cluster has kopf's peering CRDs (the chart installs them). Without them kopf
    would wait for them in silence, handling nothing: run standalone and say so."""
    try:
        groups = client.ApisApi(api).get_api_versions().groups
    except Exception:  # noqa: BLE001 - discovery trouble: let kopf try peering as asked
        return True
    if any(g.name == "kopf.dev" for g in groups):
        return True
    logging.warning(
        "no kopf peering CRDs (kopf.dev) on this cluster: running as the only replica. For "
        "two replicas (one acts, one stands by), install the chart's CRDs (helm install "
        "charts/kubetune, which ships them); to say so and silence this, pass --standalone"
    )
    return False
