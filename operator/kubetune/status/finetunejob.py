"""A FineTuneJob's status from what the operator saw: the resolution (or why it failed), the
training job's conditions (TrainJob or PyTorchJob), the trainer's progress.json and the
artifacts' MANIFEST.json."""

from dataclasses import dataclass

from kubetune.api.v1alpha1 import ProgressReport, TrainingMetrics
from kubetune.api.v1alpha1.exits import REASONS, retryable
from kubetune.api.v1alpha1.finetunejob import Artifacts, Metrics, Progress
from kubetune.api.v1alpha1.outputs import ADAPTER, MERGED
from kubetune.render.backends import of
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.plan import Plan
from kubetune.status.conditions import condition, merge
from kubetune.status.training import container_name, times, training_state

REFUSED = "TrainingJobRefused"  # the API server refused the training job (controller/finetunejob)


@dataclass(frozen=True)
class Observed:
    """What the operator saw this time."""

    generation: int
    plan: Plan | None = None
    problem: ResolveError | None = None  # what stops it: no plan, or its data not there
    training_job: dict | None = None  # the TrainJob or PyTorchJob
    progress: ProgressReport | None = None  # progress.json
    metrics: TrainingMetrics | None = None  # metrics.json, once MANIFEST.json exists
    suspend: bool = False
    pods: list[dict] | None = None  # the training job's pods, read once it failed
    now: str = ""  # RFC 3339; passed in, so this stays pure


def build_status(observed: Observed, previous: dict | None) -> dict:
    previous = previous or {}
    gen = observed.generation
    status: dict = {"observedGeneration": gen}
    problem = observed.problem
    if problem is not None and problem.reason == "InvalidSpec":
        conditions = [
            condition("Validated", False, problem.reason, problem.message, gen),
            condition("Failed", True, problem.reason, problem.message, gen),
        ]
        status.update(phase="Failed")
        status["conditions"] = merge(previous.get("conditions"), conditions, observed.now)
        return status
    conditions = [condition("Validated", True, "Valid", "spec is valid", gen)]

    if problem is not None and observed.plan is None:
        conditions.append(condition("ModelResolved", False, problem.reason, problem.message, gen))
        return stopped(status, conditions, problem, observed, previous)

    plan = observed.plan
    model = plan.model
    conditions.append(
        condition("ModelResolved", True, "Resolved", f"{model.hub}:{model.model_id}", gen)
    )
    status["resolved"] = {
        "modelSource": model.source,
        "hyperparameters": plan.hyperparameters.model_dump(exclude_none=True),
        **({"eulaVersion": model.eula.version} if model.eula else {}),
    }
    if problem is not None and problem.reason != REFUSED:  # its data or credentials are not there
        conditions.append(condition("DataValidated", False, problem.reason, problem.message, gen))
        return stopped(status, conditions, problem, observed, previous)
    conditions.append(condition("DataValidated", True, "DataFound", plan.job.spec.data.train, gen))
    training_job = observed.training_job
    if problem is not None:  # its training job could not be created
        conditions.append(condition("Running", False, problem.reason, problem.message, gen))
        return stopped(status, conditions, problem, observed, previous)
    if training_job is None:
        status["phase"] = "Pending"
        status["conditions"] = merge(previous.get("conditions"), conditions, observed.now)
        return status

    status["trainingJob"] = {"kind": training_job["kind"], "name": training_job["metadata"]["name"]}
    state, reason, message = training_state(training_job)
    status["phase"] = phase_of(state, observed.suspend, training_job)
    running = status["phase"] == "Running"
    conditions.append(condition("Running", running, reason if running else state, message, gen))
    if state == "Succeeded":
        conditions.append(condition("Succeeded", True, "TrainingSucceeded", message, gen))
    if state == "Failed":
        code, said = failure_of(observed.pods or [], container_name(training_job))
        reason = REASONS.get(code, reason or "TrainingFailed")
        conditions.append(condition("Failed", True, reason, said or message, gen))

    status.update(times(training_job, state, previous, observed.now))
    if observed.progress is not None:
        status["progress"] = progress_of(observed.progress, state == "Succeeded")
    if observed.progress is not None or observed.metrics is not None:
        status["metrics"] = metrics_of(observed.progress, observed.metrics)
    if observed.metrics is not None:
        status["artifacts"] = artifacts_of(plan)
    status["conditions"] = merge(previous.get("conditions"), conditions, observed.now)
    return status


def failure_of(pods: list[dict], container: str) -> tuple[int | None, str]:
    """The exit code and termination message of the trainer container that ended the job:
    a permanent exit (1-127, kubetune.api.v1alpha1.exits) first, else the latest failure."""
    ended = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != container:
                continue
            for state in (status.get("state"), status.get("lastState")):
                done = (state or {}).get("terminated")
                if done and done.get("exitCode"):
                    ended.append((done["exitCode"], done.get("finishedAt") or "", done))
    if not ended:
        return None, ""
    ended.sort(key=lambda e: e[1], reverse=True)  # newest first; min keeps the first of equals
    code, _, done = min(ended, key=lambda e: retryable(e[0]))
    return code, " ".join((done.get("message") or "").split())


def phase_of(state: str, suspend: bool, training_job: dict) -> str:
    if state in ("Succeeded", "Failed"):
        return state
    if state == "Suspended" or of(training_job).suspended(training_job):
        return "Suspended" if suspend else "Queued"  # not suspended by the user: Kueue holds it
    if state in ("Running", "Restarting"):
        return "Running"
    return "Pending"


def progress_of(report: ProgressReport, done: bool) -> dict:
    """status.progress from progress.json; a succeeded job is at 100%, whatever was last
    written before its training job completed."""
    progress = Progress(
        epoch=report.epoch,
        step=report.step,
        total_steps=report.total_steps,
        percent=100 if done else report.percent,
        eta_seconds=0 if done else report.eta_seconds,
    )
    return progress.model_dump(by_alias=True, exclude_none=True)


def metrics_of(report: ProgressReport | None, final: TrainingMetrics | None) -> dict:
    """status.metrics: the best epoch's once metrics.json is complete, else the latest."""
    if final is not None:
        metrics = Metrics(
            train_loss=final.train_loss,
            eval_loss=final.eval_loss,
            eval_perplexity=final.eval_perplexity,
            tokens_per_second=final.tokens_per_second,
            test_loss=final.test_loss,
            test_perplexity=final.test_perplexity,
        )
    else:
        metrics = Metrics(
            train_loss=report.train_loss,
            eval_loss=report.eval_loss,
            tokens_per_second=report.tokens_per_second,
        )
    return metrics.model_dump(by_alias=True, exclude_none=True)


def artifacts_of(plan: Plan) -> dict:
    uri = plan.output_uri.rstrip("/") + "/"
    artifacts = Artifacts(
        uri=uri,
        adapter=f"{uri}{ADAPTER}/",
        merged=f"{uri}{MERGED}/" if plan.hyperparameters.merge_weights else None,
    )
    return artifacts.model_dump(by_alias=True, exclude_none=True)


def stopped(status, conditions, problem, observed: Observed, previous: dict) -> dict:
    """Waiting (Pending) when the world may fix it, else Failed."""
    gen = observed.generation
    if problem.retry:
        status["phase"] = "Pending"
    else:
        status["phase"] = "Failed"
        conditions.append(condition("Failed", True, problem.reason, problem.message, gen))
    status["conditions"] = merge(previous.get("conditions"), conditions, observed.now)
    return status
