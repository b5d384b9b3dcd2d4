"""Reconcile one FineTuneJob: resolve it, make sure its ConfigMap and training job (TrainJob or
PyTorchJob) exist (created once, adopted if there), follow suspend, and rebuild its status from
what is there."""

import json
import logging
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubetune.api.manifests import describe_all, prune_nulls
from kubetune.api.v1alpha1 import FineTuneJob
from kubetune.api.v1alpha1.trainer_config import DATA_CHANNELS
from kubetune.config import OperatorConfig
from kubetune.controller import model_access
from kubetune.controller.cluster import Cluster
from kubetune.controller.outputs import credentials_from_secret, read_outputs, store_for
from kubetune.render.backends import BACKENDS, PYTORCHJOB, Backend, of
from kubetune.render.configmap import render_configmap
from kubetune.render.names import JOB_LABEL, QUEUE_LABEL
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.plan import Plan, plan
from kubetune.status.finetunejob import REFUSED, Observed, build_status
from kubetune.status.training import training_state
from kubetune.storage import StorageError

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Outcome:
    status: dict
    problem: ResolveError | None  # what stopped it; retry says whether waiting may help
    warnings: tuple[str, ...] = ()  # said once, when the training job is created


@dataclass(frozen=True)
class Backends:
    """What start-up discovery decided: the backend new jobs get, and every kind the cluster
    serves (where a job created under another setting may already have its training job)."""

    new_jobs: Backend = PYTORCHJOB
    served: tuple[Backend, ...] = (PYTORCHJOB,)


PYTORCHJOB_ONLY = Backends()  # what a caller that asked no cluster gets

def reconcile(
    body: dict,
    cluster: Cluster,
    config: OperatorConfig,
    now: str,
    backends: Backends = PYTORCHJOB_ONLY,
) -> Outcome:
    meta, previous = body["metadata"], body.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation", 1)
    if finished(previous, generation):
        return Outcome(previous, None)  # the outcome stands; status stays as it was written

    try:
        # The API server enforces the same schema; this catches what it could not (a CRD
        # older than this operator), as a permanent failure rather than a retry loop.
        job = FineTuneJob.model_validate(prune_nulls({**body, "status": None}))
    except ValidationError as err:
        problem = ResolveError("InvalidSpec", "; ".join(describe_all(err.errors())))
        observed = Observed(generation, problem=problem, now=now)
        return Outcome(build_status(observed, previous), problem)
    try:  # a started job's sharing is model_access's to check: losing it stops no training
        started = "trainingJob" in previous
        resolved = plan(job, meta["uid"], cluster, config, check_sharing=not started)
    except ResolveError as problem:
        model_access.withdraw(previous, job, cluster, problem)  # its hub gone: no URLs left
        observed = Observed(generation, problem=problem, suspend=bool(job.spec.suspend), now=now)
        return Outcome(build_status(observed, previous), problem)

    owner = {"name": name, "uid": meta["uid"]}
    backend, training_job = existing(previous, namespace, name, cluster, backends)
    if training_job is None:
        try:  # before any accelerator is asked for; not again once training is under way
            check_uris(resolved)  # final, so before anything that waits
            check_secrets(resolved, cluster)
            check_data(resolved, cluster)
            model_access.grant(resolved, cluster, config, owner)  # presigned hubs: the URLs
            cluster.create(render_configmap(resolved, owner))
            training_job = create(backend.render(resolved, config, owner), cluster)
        except ResolveError as problem:
            observed = Observed(generation, plan=resolved, problem=problem, now=now)
            return Outcome(build_status(observed, previous), problem)
        warnings = tuple(backend.unsupported(resolved))
    else:
        warnings = ()
        follow_suspend(training_job, job, cluster)

    progress = metrics = pods = None
    state, _, _ = training_state(training_job)
    if state == "Failed":  # once: a finished job's status is not rebuilt again
        pods = cluster.pods(namespace, {JOB_LABEL: name})
    if state in ("Running", "Restarting", "Succeeded", "Failed"):
        secret = resolved.secrets.get("output")
        data = cluster.secret_data(namespace, secret) if secret else None
        progress, metrics = read_outputs(resolved.output_uri, credentials_from_secret(data))
    observed = Observed(
        generation,
        plan=resolved,
        training_job=training_job,
        progress=progress,
        metrics=metrics,
        suspend=bool(job.spec.suspend),
        pods=pods,
        now=now,
    )
    status = build_status(observed, previous)
    if progress is None:  # not written yet, or storage unreadable this time: keep the last
        status.update(
            {k: previous[k] for k in ("progress", "metrics") if k not in status and k in previous}
        )
    model_access.keep(status, previous, resolved, cluster, config, owner, now)  # refresh, revoke
    return Outcome(status, None, warnings)


def existing(
    previous: dict, namespace: str, name: str, cluster: Cluster, backends: Backends
) -> tuple[Backend, dict | None]:
    """The job's backend and its training job if there is one. A job keeps the kind it started
    with (status.trainingJob.kind); before that is written, one of any served kind is adopted."""
    recorded = BACKENDS.get((previous.get("trainingJob") or {}).get("kind"))
    if recorded:
        return recorded, cluster.training_job(recorded, namespace, name)
    others = [b for b in backends.served if b != backends.new_jobs]
    for backend in (backends.new_jobs, *others):
        found = cluster.training_job(backend, namespace, name)
        if found is not None:
            return backend, found
    return backends.new_jobs, None


def create(body: dict, cluster: Cluster) -> dict:
    """Create the training job; a refusal that someone must fix (no such kind served, an
    admission webhook's verdict, a missing runtime) waits with the API server's own words."""
    try:
        return cluster.create(body)
    except ApiException as err:
        if err.status not in (400, 404, 422):
            raise
        said = api_message(err)
        raise ResolveError(
            REFUSED,
            f"the API server refused the {body['kind']} ({err.status}): {said}; retrying",
            retry=True,
        ) from None


def api_message(err: ApiException) -> str:
    try:
        said = json.loads(err.body or "{}").get("message")
    except (ValueError, AttributeError):
        said = None
    return " ".join(str(said or err.reason or "no reason given").split())


def finished(status: dict, generation: int) -> bool:
    """Succeeded or Failed in training, for the current spec: nothing left to do."""
    if status.get("phase") not in TERMINAL or status.get("observedGeneration") != generation:
        return False
    return "trainingJob" in status  # a job failed in resolution is re-checked (hubs change)


def check_secrets(resolved: Plan, cluster: Cluster) -> None:
    """Each referenced Secret exists in the job's namespace, or the pods could never start."""
    namespace = resolved.job.metadata.namespace
    for channel, name in sorted(resolved.secrets.items()):
        if cluster.secret_data(namespace, name) is None:
            raise ResolveError(
                "SecretNotFound",
                f"Secret {namespace}/{name} ({channel} storage credentials) does not exist; "
                "waiting for it",
                retry=True,
            )


def check_uris(resolved: Plan) -> None:
    """Pods reach storage over S3 only: a file:// URI names a machine the pods are not on."""
    data = resolved.job.spec.data
    channels = [getattr(data, name) for name in DATA_CHANNELS]
    for uri in filter(None, [*channels, resolved.output_uri]):
        if not uri.startswith("s3://"):
            raise ResolveError(
                "LocalUriInCluster",
                f"{uri}: pods cannot read this machine's files; use s3:// URIs in a cluster "
                "(file:// is for `kubetune run --local`)",
            )


def check_data(resolved: Plan, cluster: Cluster) -> None:
    """The data channels hold files (read with the data Secret); the trainer checks formats."""
    data = resolved.job.spec.data
    secret = resolved.secrets.get("data")
    namespace = resolved.job.metadata.namespace
    credentials = credentials_from_secret(
        cluster.secret_data(namespace, secret) if secret else None
    )
    for uri in filter(None, (getattr(data, name) for name in DATA_CHANNELS)):
        try:
            store = store_for(uri, credentials)
            found = store.list_files(uri) or store.exists(uri)
        except StorageError as err:
            raise ResolveError("DataNotReadable", f"{err}; retrying", retry=True) from None
        if not found:
            raise ResolveError(
                "DataNotFound", f"{uri}: no files there (yet); waiting for them", retry=True
            )


def follow_suspend(training_job: dict, job: FineTuneJob, cluster: Cluster) -> None:
    """spec.suspend -> the training job's suspend. A queued job is unsuspended by Kueue, not
    by us."""
    backend = of(training_job)
    want = bool(job.spec.suspend)
    have = backend.suspended(training_job)
    queued = QUEUE_LABEL in (training_job["metadata"].get("labels") or {})
    if want != have and (want or not queued):
        meta = training_job["metadata"]
        cluster.set_suspend(backend, meta["namespace"], meta["name"], want)
        held = training_job
        for key in backend.suspend_path[:-1]:
            held = held.setdefault(key, {})
        held[backend.suspend_path[-1]] = want
