"""kopf handlers on their own registry: each decodes, delegates, returns.

FineTuneJobs are reconciled on create, on resume (operator restart), on spec change and on a
timer (PyTorchJob state and progress.json); ModelHubs on the same events and a slower timer.
"""

import datetime
import logging
import time

import kopf

from kubetune.config import OperatorConfig
from kubetune.controller import finetunejob, modelhub
from kubetune.controller.cluster import Cluster
from kubetune.controller.metrics import Metrics
from kubetune.controller.seen import Seen, index_by_name
from kubetune.render.names import JOB_LABEL

log = logging.getLogger(__name__)

JOBS = ("kubetune.io", "v1alpha1", "finetunejobs")
HUBS = ("kubetune.io", "v1alpha1", "modelhubs")
PYTORCHJOBS = ("kubeflow.org", "v1", "pytorchjobs")
PREFIX = "kubetune.io"
MAX_DELAY = 300  # seconds: backoff for a job that waits (hub missing, model not ready)


def build_registry(
    config: OperatorConfig, cluster: Cluster, metrics: Metrics
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        # kopf's handler bookkeeping goes to annotations: our status schema has only our fields.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{PREFIX}/finalizer"
        # Events are ours (phase changes, failures), not one per kopf log line.
        settings.posting.level = logging.WARNING
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]  # API trouble: back off, no storm

    # Hubs and our PyTorchJobs as the watches see them: no GET of either per reconcile.
    kopf.index(*HUBS, registry=registry, id="hubs")(index_by_name)
    ours = {JOB_LABEL: kopf.PRESENT}
    kopf.index(*PYTORCHJOBS, labels=ours, registry=registry, id="pytorchjobs")(index_by_name)

    def reconcile_job(body, patch, retry, logger, hubs, pytorchjobs, **_):
        started = time.monotonic()
        seen = Seen(cluster, hubs, pytorchjobs)
        outcome = finetunejob.reconcile(dict(body), seen, config, now())
        metrics.reconcile_seconds.labels("FineTuneJob").observe(time.monotonic() - started)
        announce(body, outcome.status, logger)
        metrics.job_phase(body["metadata"]["uid"], outcome.status.get("phase"))
        if outcome.status != (body.get("status") or {}):
            patch.status.update(outcome.status)
        if outcome.problem is not None:
            metrics.reconcile_errors.labels("FineTuneJob", outcome.problem.reason).inc()
            if outcome.problem.retry:
                raise kopf.TemporaryError(outcome.problem.message, delay=backoff(retry))

    for on in (kopf.on.create, kopf.on.resume):
        on(*JOBS, registry=registry, id="reconcile")(reconcile_job)
    kopf.on.update(*JOBS, field="spec", registry=registry, id="reconcile")(reconcile_job)
    kopf.timer(
        *JOBS,
        interval=config.progress_interval_seconds,
        when=refreshable,
        registry=registry,
        id="refresh",
    )(refresh_job(reconcile_job))

    @kopf.on.delete(*JOBS, registry=registry, optional=True)
    def forget_job(body, **_):
        metrics.job_phase(body["metadata"]["uid"], None)

    def reconcile_hub(body, patch, hubs, pytorchjobs, **_):
        started = time.monotonic()
        status = modelhub.reconcile_hub(dict(body), Seen(cluster, hubs, pytorchjobs), now())
        metrics.reconcile_seconds.labels("ModelHub").observe(time.monotonic() - started)
        meta = body["metadata"]
        metrics.hub_models_ready.labels(meta["namespace"], meta["name"]).set(status["readyModels"])
        if status != (body.get("status") or {}):
            patch.status.update(status)

    for on in (kopf.on.create, kopf.on.resume):
        on(*HUBS, registry=registry, id="reconcile")(reconcile_hub)
    kopf.on.update(*HUBS, field="spec", registry=registry, id="reconcile")(reconcile_hub)
    kopf.timer(*HUBS, interval=config.hub_recheck_seconds, registry=registry, id="recheck")(
        reconcile_hub
    )
    return registry


def refreshable(body, **_) -> bool:
    """Whether a job gets the timer, and so kopf's finalizer (kopf puts one on every object a
    timer matches). Not before the change handlers have seen this generation: a new job's
    first reconcile is not held up by a finalizer round trip. Not once its outcome stands:
    finished jobs carry no finalizer, so they can be deleted with the operator gone."""
    status, generation = body.get("status") or {}, body["metadata"].get("generation", 1)
    if status.get("observedGeneration") != generation:
        return False  # the change handlers have this generation in hand; do not race them
    return not finetunejob.finished(status, generation)


def refresh_job(reconcile_job):
    """The timer's view of a job: reconcile again; waiting is the timer's job, not kopf's."""

    def refresh(body, patch, logger, **kwargs):
        try:
            reconcile_job(body=body, patch=patch, logger=logger, **{**kwargs, "retry": 0})
        except kopf.TemporaryError:
            pass  # the timer comes back anyway

    return refresh


def announce(body, status: dict, logger) -> None:
    """An event on every phase change, a warning one on every failure."""
    before = (body.get("status") or {}).get("phase")
    after = status.get("phase")
    if after == before or after is None:
        return
    reason, message = phase_reason(status)
    if after == "Failed":
        kopf.event(body, type="Warning", reason=reason, message=message)
    else:
        # kopf.event, not kopf.info: posting.level (WARNING) filters only kopf's own log lines.
        kopf.event(body, type="Normal", reason=after, message=message or f"phase -> {after}")
    logger.info("phase %s -> %s: %s", before, after, message)


def phase_reason(status: dict) -> tuple[str, str]:
    conditions = status.get("conditions") or []
    failed = next((c for c in conditions if c["type"] == "Failed" and c["status"] == "True"), None)
    if failed:
        return failed["reason"], failed["message"]
    latest = conditions[-1] if conditions else {}
    return latest.get("reason", ""), latest.get("message", "")


def backoff(retry: int) -> float:
    return min(5 * 2**retry, MAX_DELAY)  # 5, 10, 20 ... 300 s


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
