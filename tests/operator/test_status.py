"""FineTuneJob status as a pure function of what the operator observed."""

import pytest

from kubetune.api.v1alpha1 import ProgressReport, TrainingMetrics
from kubetune.resolve.errors import ResolveError
from kubetune.status.finetunejob import Observed, build_status
from tests.operator.test_resolve import job, resolve

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def pytorchjob(*true, suspend=False, start=None, end=None):
    conditions = [{"type": t, "status": "True", "reason": f"PyTorchJob{t}"} for t in true]
    status = {"conditions": conditions}
    if start:
        status["startTime"] = start
    if end:
        status["completionTime"] = end
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": "bot"},
        "spec": {"runPolicy": {"suspend": suspend}},
        "status": status,
    }


def observe(**seen):
    return Observed(generation=2, plan=seen.pop("plan", resolve(job())), now=T0, **seen)


def conditions(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    "states, suspend, phase",
    [
        ((), False, "Pending"),
        (("Created",), False, "Pending"),
        (("Created", "Running"), False, "Running"),
        (("Created", "Running", "Restarting"), False, "Running"),
        (("Created", "Running", "Succeeded"), False, "Succeeded"),
        (("Created", "Failed"), False, "Failed"),
        (("Created", "Suspended"), True, "Suspended"),
        (("Created", "Suspended"), False, "Queued"),
    ],
)
def test_phase_follows_the_pytorchjob(states, suspend, phase):
    status = build_status(observe(training_job=pytorchjob(*states), suspend=suspend), None)
    assert status["phase"] == phase
    assert status["observedGeneration"] == 2
    assert status["trainingJob"] == {"kind": "PyTorchJob", "name": "bot"}


def test_no_pytorchjob_yet_is_pending_with_the_resolution_recorded():
    status = build_status(observe(), None)
    assert status["phase"] == "Pending"
    assert status["resolved"]["modelSource"] == "s3://models/llama/"
    assert status["resolved"]["eulaVersion"] == "3.2"
    assert status["resolved"]["hyperparameters"]["lora_r"] == 16
    assert conditions(status)["ModelResolved"] == ("True", "Resolved")


def test_permanent_problem_fails_and_temporary_one_waits():
    denied = ResolveError("HubAccessDenied", "ModelHub x/y is not shared with namespace z")
    status = build_status(observe(plan=None, problem=denied), None)
    assert status["phase"] == "Failed"
    assert conditions(status)["Failed"] == ("True", "HubAccessDenied")
    missing = ResolveError("HubNotFound", "ModelHub x/y does not exist (yet)", retry=True)
    status = build_status(observe(plan=None, problem=missing), None)
    assert status["phase"] == "Pending" and "Failed" not in conditions(status)


def test_progress_metrics_and_artifacts():
    progress = ProgressReport(
        epoch=2,
        step=50,
        total_steps=100,
        percent=50,
        eta_seconds=60,
        train_loss=1.5,
        eval_loss=1.7,
        tokens_per_second=900.0,
    )
    running = build_status(
        observe(training_job=pytorchjob("Running", start=T0), progress=progress), None
    )
    assert running["progress"] == {
        "epoch": 2,
        "step": 50,
        "totalSteps": 100,
        "percent": 50,
        "etaSeconds": 60,
    }
    assert running["metrics"] == {"trainLoss": 1.5, "evalLoss": 1.7, "tokensPerSecond": 900.0}
    assert "artifacts" not in running and running["startTime"] == T0

    epoch = {"epoch": 1, "train_loss": 1.2, "eval_loss": 1.4, "eval_perplexity": 4.05}
    final = TrainingMetrics(
        best_epoch=1,
        train_loss=1.2,
        eval_loss=1.4,
        eval_perplexity=4.05,
        tokens_per_second=950.0,
        train_tokens=95_000,
        train_seconds=100.0,
        padding_fraction=0.1,
        steps=100,
        world_size=1,
        epochs=[epoch],
    )
    done = build_status(
        observe(
            training_job=pytorchjob("Running", "Succeeded", start=T0, end=T1),
            progress=progress,
            metrics=final,
        ),
        running,
    )
    assert done["metrics"] == {
        "trainLoss": 1.2,
        "evalLoss": 1.4,
        "evalPerplexity": 4.05,
        "tokensPerSecond": 950.0,
    }
    assert done["artifacts"] == {
        "uri": "s3://out/bot/",
        "adapter": "s3://out/bot/adapter/",
        "merged": "s3://out/bot/merged/",
    }
    assert done["progress"]["percent"] == 100 and done["completionTime"] == T1


def test_transition_time_kept_while_a_condition_holds():
    first = build_status(observe(training_job=pytorchjob("Running")), None)
    later = build_status(
        Observed(generation=2, plan=resolve(job()), training_job=pytorchjob("Running"), now=T1),
        first,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["Running"] == T0 and times["Validated"] == T0
    done = build_status(
        Observed(generation=2, plan=resolve(job()), training_job=pytorchjob("Succeeded"), now=T1),
        first,
    )
    assert {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}["Running"] == T1


def test_spec_the_api_server_let_through_but_we_refuse_fails_validated():
    invalid = ResolveError("InvalidSpec", "spec.hyperparameters.lora_r: 0: must be >= 1")
    status = build_status(observe(plan=None, problem=invalid), None)
    assert status["phase"] == "Failed"
    assert conditions(status) == {
        "Validated": ("False", "InvalidSpec"),
        "Failed": ("True", "InvalidSpec"),
    }


def trainer_pod(*terminated):
    """A pod of the training job whose trainer container ended (state, then lastState)."""
    states = [{"terminated": t} for t in terminated] + [None, None]
    status = {"name": "pytorch", "state": states[0], "lastState": states[1]}
    return {"metadata": {"name": "bot-master-0"}, "status": {"containerStatuses": [status]}}


def test_a_failed_job_says_what_the_trainer_said():
    """The Training Operator's own message only counts replicas; the termination message of
    the pod that failed permanently says what to fix."""
    data_error = {"exitCode": 2, "message": "s3://d/train.csv: header row\nis empty",
                  "finishedAt": T0}  # fmt: skip
    preempted = {"exitCode": 143, "message": "stopped by SIGTERM", "finishedAt": T1}
    seen = observe(
        training_job=pytorchjob("Created", "Failed"),
        pods=[trainer_pod(preempted), trainer_pod(data_error)],
    )
    status = build_status(seen, None)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == (
        "InvalidInput",
        "s3://d/train.csv: header row is empty",
    )


def test_a_failure_without_a_termination_message_keeps_the_training_operators_words():
    job_failed = pytorchjob("Created", "Failed")
    job_failed["status"]["conditions"][-1]["message"] = 'job "bot" is failing because ...'
    status = build_status(observe(training_job=job_failed, pods=[]), None)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PyTorchJobFailed" and failed["message"].startswith("job")
    gave_up = {"exitCode": 3, "message": "started 5 times", "finishedAt": T0}
    status = build_status(observe(training_job=job_failed, pods=[trainer_pod(gave_up)]), None)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded", "started 5 times")


def test_test_channel_figures_of_metrics_json_go_to_status_metrics():
    """A metrics.json with a test channel's scores, as the trainer writes it; one without
    (the case above) gives no testLoss/testPerplexity keys at all."""
    written = (
        '{"best_epoch": 2, "train_loss": 1.1, "eval_loss": 1.3, "eval_perplexity": 3.67, '
        '"tokens_per_second": 950.0, "train_tokens": 95000, "train_seconds": 100.0, '
        '"padding_fraction": 0.1, "steps": 100, "world_size": 2, "epochs": [], '
        '"test_loss": 1.35, "test_perplexity": 3.86, "test_samples": 40}'
    )
    final = TrainingMetrics.read(written, "s3://out/bot/metrics.json")
    done = build_status(
        observe(training_job=pytorchjob("Running", "Succeeded", start=T0, end=T1), metrics=final),
        None,
    )
    assert done["metrics"] == {
        "trainLoss": 1.1,
        "evalLoss": 1.3,
        "evalPerplexity": 3.67,
        "tokensPerSecond": 950.0,
        "testLoss": 1.35,
        "testPerplexity": 3.86,
    }
