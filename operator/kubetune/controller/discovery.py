"""At start-up: which training job kinds the cluster serves, and so which backend new jobs get
(OperatorConfig.training_backend). Decided once and logged; a job keeps the kind it started
with, whatever a later start-up decides."""

import logging

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kubetune.controller.finetunejob import Backends
from kubetune.render.backends import BACKENDS, choose

log = logging.getLogger(__name__)


def served_kinds(api: client.ApiClient) -> set[str]:
    """The backends' kinds this cluster serves (discovery: group, version, resource)."""
    found, custom = set(), client.CustomObjectsApi(api)
    for backend in BACKENDS.values():
        try:
            listed = custom.get_api_resources(backend.group, backend.version, _request_timeout=10)
        except ApiException as err:
            if err.status == 404:  # the group/version is not served
                continue
            raise
        if any(r.name == backend.plural for r in listed.resources or []):
            found.add(backend.kind)
    return found


def decide(setting: str, api: client.ApiClient) -> Backends:
    try:
        served = served_kinds(api)
    except (ApiException, HTTPError) as err:
        served = set()
        log.warning(
            "training backend discovery failed (%s): assuming neither kind is served",
            " ".join(str(err).split())[:200],
        )
    chosen = choose(setting, served)
    kinds = " and ".join(sorted(served)) or "neither TrainJob nor PyTorchJob"
    if chosen.kind in served:
        log.info(
            "training backend: %s (setting %s; the cluster serves %s)", chosen.kind, setting, kinds
        )
    else:
        log.warning(
            "training backend: %s (setting %s), but the cluster serves %s: jobs will wait "
            "until %s is installed (Kubeflow Trainer v2 for TrainJob, Training Operator v1.9 "
            "for PyTorchJob; docs/operator.md)",
            chosen.kind,
            setting,
            kinds,
            chosen.api_version,
        )
    # Watched (indexed) kinds: only those served; kopf would wait for a missing kind's index.
    return Backends(new_jobs=chosen, served=tuple(b for b in BACKENDS.values() if b.kind in served))
