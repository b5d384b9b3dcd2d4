"""kopf handlers on their own registry: each decodes, delegates, returns.

FineTuneJobs are reconciled on create, on resume (operator restart), on spec change and on a
timer (training job state and progress.json); ModelHubs on the same events and a slower timer.
"""

import contextlib
import datetime
import logging
import threading
import time

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubetune.config import OperatorConfig
from kubetune.controller import finetunejob, modelhub
from kubetune.controller.cluster import Cluster
from kubetune.controller.finetunejob import PYTORCHJOB_ONLY, Backends
from kubetune.controller.metrics import Metrics
from kubetune.controller.seen import Seen, index_by_name
from kubetune.render.names import JOB_LABEL

log = logging.getLogger(__name__)

JOBS = ("kubetune.io", "v1alpha1", "finetunejobs")
HUBS = ("kubetune.io", "v1alpha1", "modelhubs")
PREFIX = "kubetune.io"
MAX_DELAY = 300  # seconds: backoff for a job that waits (hub missing, model not ready)
# How our kopf.TemporaryError messages start, so the log says INFO for a wait and WARNING for
# API trouble, where kopf would say ERROR for both ("Handler 'reconcile' failed temporarily").
WAITING, API_TROUBLE = "waiting: ", "API server "


def build_registry(
    config: OperatorConfig,
    cluster: Cluster,
    metrics: Metrics,
    backends: Backends = PYTORCHJOB_ONLY,
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
        objects = logging.getLogger("kopf.objects")
        if not any(isinstance(f, TemporaryIsNotError) for f in objects.filters):
            objects.addFilter(TemporaryIsNotError())

    # Hubs and our training jobs as the watches see them: no GET of either per reconcile. Only
    # kinds the cluster serves: kopf would wait for an index of a missing kind to fill.
    kopf.index(*HUBS, registry=registry, id="hubs")(index_by_name)
    ours = {JOB_LABEL: kopf.PRESENT}
    index_ids = {b.kind: b.plural for b in backends.served}
    for backend in backends.served:
        api = (backend.group, backend.version, backend.plural)
        kopf.index(*api, labels=ours, registry=registry, id=backend.plural)(index_by_name)

    def seen(hubs, indexes: dict) -> Seen:
        return Seen(cluster, hubs, {kind: indexes[i] for kind, i in index_ids.items()})

    one_at_a_time = PerJob()
    stopping = threading.Event()

    @kopf.on.cleanup(registry=registry)
    async def stop_refreshing(**_):  # async: a sync one would queue behind the timers' runs
        stopping.set()  # timer runs still queued in the thread pool return at once

    def reconcile_job(body, patch, retry, logger, hubs, **kwargs):  # kwargs: the job indexes
        uid = body["metadata"]["uid"]
        with one_at_a_time.lock(uid), api_trouble_is_temporary(retry):
            started = time.monotonic()
            outcome = finetunejob.reconcile(
                dict(body), seen(hubs, kwargs), config, now(), backends
            )
            metrics.reconcile_seconds.labels("FineTuneJob").observe(time.monotonic() - started)
            if one_at_a_time.phase_changed(uid, outcome.status.get("phase")):
                announce(body, outcome.status, logger)
        for warning in outcome.warnings:  # the spec asks for what this backend cannot do
            kopf.event(body, type="Warning", reason="NotApplied", message=warning)
            logger.warning("%s", warning)
        metrics.job_phase(body["metadata"]["uid"], outcome.status.get("phase"))
        if outcome.status != (body.get("status") or {}):
            patch.status.update(outcome.status)
        if outcome.problem is not None:
            metrics.reconcile_errors.labels("FineTuneJob", outcome.problem.reason).inc()
            if outcome.problem.retry:
                message = WAITING + outcome.problem.message
                raise kopf.TemporaryError(message, delay=backoff(retry))

    for on in (kopf.on.create, kopf.on.resume):
        on(*JOBS, registry=registry, id="reconcile")(reconcile_job)
    kopf.on.update(*JOBS, field="spec", registry=registry, id="reconcile")(reconcile_job)
    kopf.timer(
        *JOBS,
        interval=config.progress_interval_seconds,
        initial_delay=config.progress_interval_seconds,  # the change handlers go first
        when=unfinished,
        registry=registry,
        id="refresh",
    )(refresh_job(reconcile_job, stopping))

    @kopf.on.delete(*JOBS, registry=registry, optional=True)
    def forget_job(body, **_):
        metrics.job_phase(body["metadata"]["uid"], None)
        one_at_a_time.forget(body["metadata"]["uid"])

    def reconcile_hub(body, patch, hubs, retry=0, **_):
        started = time.monotonic()
        with api_trouble_is_temporary(retry):
            status = modelhub.reconcile_hub(dict(body), Seen(cluster, hubs, {}), now())
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


class TemporaryIsNotError(logging.Filter):
    """kopf logs every kopf.TemporaryError at ERROR, and posts it as an Event: a job waiting for
    its data is not an error. Ours say which they are (WAITING, API_TROUBLE); others stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() if record.levelno == logging.ERROR else ""
        said = text.partition(" failed temporarily: ")[2]
        if said.startswith(WAITING):
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif said.startswith(API_TROUBLE):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def unfinished(body, **_) -> bool:
    """Whether a job gets the timer, and so kopf's finalizer (kopf puts one on every object a
    timer matches): from first sight, so that a job whose first status write failed (kopf
    drops that event, and no other comes) is still reconciled; not once its outcome stands,
    so finished jobs carry no finalizer and can be deleted with the operator gone."""
    status, generation = body.get("status") or {}, body["metadata"].get("generation", 1)
    return not finetunejob.finished(status, generation)


class PerJob:
    """The timer and a change handler may fire for one job at once, in two threads: they take
    turns. The phase last announced is kept, so the second, working from the same older body,
    does not post the same event again."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._phases: dict[str, str | None] = {}

    def lock(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def phase_changed(self, uid: str, phase: str | None) -> bool:
        with self._guard:
            changed = self._phases.get(uid, "") != phase
            self._phases[uid] = phase
            return changed

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)
            self._phases.pop(uid, None)


@contextlib.contextmanager
def api_trouble_is_temporary(retry: int):
    """A 5xx, 409, 429, 401 or 403 from the API server, or no answer, is retried with our
    backoff (5 s, 10 s ...), not kopf's 60 s for an unexpected error."""
    try:
        yield
    except ApiException as err:
        if err.status in (409, 429) or (err.status or 500) >= 500:
            message = f"{API_TROUBLE}answered {err.status} {err.reason}; retrying"
            raise kopf.TemporaryError(message, delay=backoff(retry)) from None
        if err.status in (401, 403):
            # A restarted kube-apiserver refuses service accounts for seconds, until its RBAC
            # caches fill; a role missing a verb stays refused, retried at most every 300 s.
            message = (
                f"{API_TROUBLE}answered {err.status} {err.reason} (just restarted, or the "
                "operator's role lacks this permission); retrying"
            )
            raise kopf.TemporaryError(message, delay=backoff(retry)) from None
        raise
    except urllib3.exceptions.HTTPError as err:
        message = f"{API_TROUBLE}unreachable ({type(err).__name__}); retrying"
        raise kopf.TemporaryError(message, delay=backoff(retry)) from None


def refresh_job(reconcile_job, stopping: threading.Event):
    """The timer's view of a job: reconcile again; waiting is the timer's job, not kopf's.
    Once the operator is stopping, not at all: kopf leaves timers that outlive its shutdown
    orphaned, and the interpreter runs every run still queued in the thread pool before it
    exits; with 1,000 jobs those are many."""

    def refresh(body, patch, logger, **kwargs):
        if stopping.is_set():
            return
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
