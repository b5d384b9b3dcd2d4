"""A job's access to its hub model without the hub's credentials (storage.access: presigned):
the Secret `NAME-model-urls` in the job's namespace, one presigned GET URL per model file,
signed with the hub's Secret in the hub's namespace. Made before the training job, signed again
while the job is unfinished, removed when it ends or its namespace loses the hub; a started
job's sharing is checked here, and what happened is its ModelAccess condition."""

import datetime
import logging
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from kubetune.api.v1alpha1.model_urls import SECRET_LIMIT, URLS_KEY
from kubetune.config import OperatorConfig
from kubetune.controller.cluster import Cluster
from kubetune.controller.outputs import credentials_from_secret
from kubetune.controller.presign import sign_model
from kubetune.render.model_access import (
    EXPIRES_ANNOTATION,
    SOURCE_ANNOTATION,
    presigned,
    render_model_urls_secret,
)
from kubetune.render.names import JOB_LABEL, model_urls_name
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.hubs import resolve_model
from kubetune.resolve.plan import Plan
from kubetune.status.conditions import condition, merge
from kubetune.storage import StorageError

log = logging.getLogger(__name__)

CONDITION = "ModelAccess"
FAILED = "ModelAccessFailed"  # the store could not be listed, or the URLs not signed
TERMINAL = ("Succeeded", "Failed")
Clock = Callable[[], float]


def grant(plan: Plan, cluster: Cluster, config: OperatorConfig, owner: dict,
          clock: Clock = time.time) -> None:  # fmt: skip
    """Before the training job exists: its pods' Secret of model URLs, fresh. ResolveError
    (waits) when the hub's store cannot be read or signed for."""
    if not presigned(plan):
        return
    try:
        fresh(plan, cluster, config, owner, clock)
    except StorageError as err:
        raise ResolveError(FAILED, f"cannot sign the model's URLs: {err}; retrying", True) from None


def keep(status: dict, previous: dict, plan: Plan, cluster: Cluster, config: OperatorConfig,
         owner: dict, now: str, clock: Clock = time.time) -> None:  # fmt: skip
    """Once the training job exists: URLs refreshed before they expire; removed when training
    ends or the hub is no longer shared (checked here: plan() skips it for a started job, so
    that losing the hub does not make training that goes on look Failed). Sets status's
    ModelAccess condition where there is something to say."""
    if "trainingJob" not in status:
        return
    job, gen = plan.job.metadata, status.get("observedGeneration")
    name = f"{job.namespace}/{model_urls_name(job.name)}"
    ended = status.get("phase") in TERMINAL
    lost = None if ended else sharing_lost(plan, cluster)
    if ended:
        if not presigned(plan):
            return
        cluster.delete_secret(job.namespace, model_urls_name(job.name))
        found = condition(CONDITION, False, "TrainingEnded", f"Secret {name} removed", gen)
    elif lost is not None:
        if presigned(plan):
            cluster.delete_secret(job.namespace, model_urls_name(job.name))
            said = (
                f"{lost.message}. Its model URLs are no longer refreshed and Secret {name} was "
                "removed: a pod that starts now cannot download the model (URLs already "
                "handed out work until they expire)"
            )
        else:
            said = f"{lost.message}. Running pods go on with their access ({plan.model_access})"
        found = condition(CONDITION, False, lost.reason, said, gen)
    elif presigned(plan):
        try:
            expires = fresh(plan, cluster, config, owner, clock)
            said = f"presigned URLs for {plan.model.source} in Secret {name}, valid until {expires}"
            found = condition(CONDITION, True, "PresignedUrls", said, gen)
        except (StorageError, ResolveError) as err:  # the Secret as it was stays until expiry
            said = f"refreshing the URLs: {err}; retrying"
            found = condition(CONDITION, False, FAILED, said, gen)
    else:
        return
    before = [c for c in previous.get("conditions") or [] if c.get("type") == CONDITION]
    status["conditions"] = [*status.get("conditions", []), *merge(before, [found], now)]


def withdraw(previous: dict, job, cluster: Cluster, problem: ResolveError) -> None:
    """A started job whose hub can no longer be read (deleted, or in a namespace that no longer
    answers for it): its model URLs' Secret goes, if it has one."""
    if "trainingJob" in previous and problem.reason == "HubAccessDenied":
        cluster.delete_secret(job.metadata.namespace, model_urls_name(job.metadata.name))


def sharing_lost(plan: Plan, cluster: Cluster) -> ResolveError | None:
    """Why the job's namespace may no longer use the hub (or a hop of its references)."""
    try:
        resolve_model(plan.job, cluster, require_ready=False)
    except ResolveError as err:
        if err.reason == "HubAccessDenied":
            return err
    return None


def fresh(plan: Plan, cluster: Cluster, config: OperatorConfig, owner: dict, clock: Clock) -> str:
    """The Secret, signed again unless it is good for more than the refresh margin; returns
    when its URLs expire. Only a Secret this job owns is ever replaced."""
    job = plan.job.metadata
    name = model_urls_name(job.name)
    found = cluster.secret(job.namespace, name)
    if found is not None:
        mine(found, owner, job.namespace)
        annotations = found["metadata"].get("annotations") or {}
        expires = annotations.get(EXPIRES_ANNOTATION, "")
        same_source = annotations.get(SOURCE_ANNOTATION) == plan.model.source
        margin = config.presigned_urls.refresh_margin_seconds
        if same_source and seconds_left(expires, clock) > margin:
            return expires
    body = signed(plan, cluster, config, owner, clock)
    if found is None:
        try:
            cluster.create_secret(body)
        except ApiException as err:
            if err.status != 409:  # made a moment ago by another replica or an earlier try
                raise
            mine(cluster.secret(job.namespace, name) or {"metadata": {}}, owner, job.namespace)
            cluster.update_secret(body)
    else:
        cluster.update_secret(body)
    return body["metadata"]["annotations"][EXPIRES_ANNOTATION]


def signed(plan: Plan, cluster: Cluster, config: OperatorConfig, owner: dict, clock: Clock):
    """The Secret's body with URLs signed now, with the source hub's credentials."""
    hub = plan.model.source_hub
    storage = hub.spec.storage
    secret = storage.secret_ref.name if storage and storage.secret_ref else None
    data = None
    if secret is not None:
        data = cluster.secret_data(hub.metadata.namespace, secret)
        if data is None:
            key = f"{hub.metadata.namespace}/{hub.metadata.name}"
            raise ResolveError(
                FAILED, f"ModelHub {key}: its storage Secret does not exist; waiting", True
            )
    now = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    lifetime = config.presigned_urls.lifetime_seconds
    model = sign_model(plan.model.source, credentials_from_secret(data), lifetime, now)
    body = render_model_urls_secret(plan, owner, model)
    size = len(body["stringData"][URLS_KEY].encode())
    if size > SECRET_LIMIT * 3 // 4:  # base64 makes 4 bytes of 3
        raise StorageError(
            plan.model.source,
            f"{len(model.files)} files: their URLs ({size:,} bytes) do not fit in one Secret; "
            "keep only the model's own files (config, weights, tokenizer) in its folder",
        )
    log.info("%s: %d model URLs signed, valid until %s", body["metadata"]["name"],
             len(model.files), model.expires_at)  # fmt: skip
    return body


def mine(secret: dict, owner: dict, namespace: str) -> None:
    """Refuse to touch a Secret this job did not make (a user's, of the same name)."""
    meta = secret.get("metadata") or {}
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or []}
    if owner["uid"] not in owners or (meta.get("labels") or {}).get(JOB_LABEL) != owner["name"]:
        raise ResolveError(
            "SecretConflict",
            f"Secret {namespace}/{model_urls_name(owner['name'])} exists and is not this job's: "
            "kubetune writes the job's model URLs there; delete or rename it",
            retry=True,
        )


def seconds_left(expires: str, clock: Clock) -> float:
    try:
        at = datetime.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0  # unreadable: sign again
    return at.timestamp() - clock()
