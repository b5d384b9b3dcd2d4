"""The Argo CD health checks of docs/argocd/, run as Argo CD runs them: Lua 5.1 (lupa.lua51),
with `obj` the live object, in a sandbox with only the libraries Argo CD opens. The FineTuneJob
and ModelHub fixtures are checked against the API types, so they stay what the operator writes."""

from pathlib import Path

import lupa.lua51 as lua51
import pytest
import yaml

from kubetune.api.v1alpha1.finetunejob import FineTuneJobStatus
from kubetune.api.v1alpha1.modelhub import ModelHubStatus

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "docs" / "argocd"
SCRIPTS = {
    "kubetune.io_FineTuneJob": ARGOCD / "health" / "finetunejob.lua",
    "kubetune.io_ModelHub": ARGOCD / "health" / "modelhub.lua",
    "kubeflow.org_PyTorchJob": ARGOCD / "health" / "pytorchjob.lua",
    "trainer.kubeflow.org_TrainJob": ARGOCD / "health" / "trainjob.lua",
}

# Argo CD's Lua VM opens base, table, string and math, nothing that reaches files or the OS.
SANDBOX = """
function(code, obj)
  local env = {obj = obj, ipairs = ipairs, pairs = pairs, next = next, type = type,
               tostring = tostring, tonumber = tonumber, select = select, unpack = unpack,
               error = error, pcall = pcall, string = string, table = table, math = math}
  local chunk = assert(loadstring(code, "health.lua"))
  setfenv(chunk, env)
  return chunk()
end
"""


def health(kind: str, obj: dict) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    run = lua.eval(SANDBOX)
    result = run(SCRIPTS[kind].read_text(), lua.table_from(obj, recursive=True))
    return result["status"], result["message"]


def cond(kind, status="True", reason=None, message=None) -> dict:
    found = {"type": kind, "status": status, "lastTransitionTime": "2026-01-05T10:00:00Z"}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def job(status: dict | None, generation: int = 1, spec: dict | None = None) -> dict:
    obj = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "support-bot", "namespace": "team-a", "generation": generation},
        "spec": spec or {"model": {"hubRef": {"name": "curated"}, "modelId": "llama"}},
    }
    if status is not None:
        status = {k: v for k, v in status.items() if v is not None}  # None: a field left out
        FineTuneJobStatus.model_validate(status)  # a status the operator can write
        obj["status"] = status
    return obj


ACCEPTED = [
    cond("Validated", reason="Valid", message="spec is valid"),
    cond("ModelResolved", reason="Resolved", message="ml-platform/curated:llama"),
    cond("DataValidated", reason="DataFound", message="s3://datasets/support/train/"),
]
RUNNING = {
    "phase": "Running",
    "observedGeneration": 1,
    "trainingJob": {"kind": "PyTorchJob", "name": "support-bot"},
    "conditions": [*ACCEPTED, cond("Running", reason="PyTorchJobRunning")],
    "progress": {"epoch": 2, "step": 120, "totalSteps": 300, "percent": 40, "etaSeconds": 3930},
    "metrics": {"trainLoss": 1.23456, "evalLoss": 1.5},
}

FINETUNEJOBS = {
    "no status yet": (job(None), "Progressing", "Waiting for the kubetune operator"),
    "pending: hub missing": (
        job(
            {
                "phase": "Pending",
                "observedGeneration": 1,
                "conditions": [
                    cond("Validated", reason="Valid", message="spec is valid"),
                    cond(
                        "ModelResolved",
                        "False",
                        "HubNotFound",
                        "ModelHub ml-platform/curated not found",
                    ),
                ],
            }
        ),
        "Progressing",
        "Pending: HubNotFound: ModelHub ml-platform/curated not found",
    ),
    "pending: creating": (
        job({"phase": "Pending", "observedGeneration": 1, "conditions": ACCEPTED}),
        "Progressing",
        "Pending: the training job is being created",
    ),
    "queued": (
        job(
            {"phase": "Queued", "observedGeneration": 1, "conditions": ACCEPTED},
            spec={
                "model": {"hubRef": {"name": "curated"}, "modelId": "llama"},
                "scheduling": {"queueName": "team-a"},
            },
        ),
        "Progressing",
        "Queued: waiting for Kueue to admit the training job (queue team-a)",
    ),
    "running with progress": (
        job(RUNNING),
        "Progressing",
        "Running: epoch 2, step 120/300, 40%, ETA 1h05m, train loss 1.235, eval loss 1.5",
    ),
    "running, no progress yet": (
        job({**RUNNING, "progress": None, "metrics": None}),
        "Progressing",
        "Running: PyTorchJobRunning",
    ),
    "succeeded": (
        job(
            {
                **RUNNING,
                "phase": "Succeeded",
                "conditions": [
                    *ACCEPTED,
                    cond("Running", "False", "Succeeded"),
                    cond("Succeeded", reason="TrainingSucceeded"),
                ],
                "progress": {"epoch": 3, "step": 300, "totalSteps": 300, "percent": 100},
                "metrics": {"trainLoss": 0.9, "evalLoss": 1.0625},
                "artifacts": {
                    "uri": "s3://artifacts/support-bot/",
                    "adapter": "s3://artifacts/support-bot/adapter/",
                },
            }
        ),
        "Healthy",
        "Succeeded: adapter at s3://artifacts/support-bot/adapter/, eval loss 1.062",
    ),
    "failed in training": (
        job(
            {
                **RUNNING,
                "phase": "Failed",
                "conditions": [
                    *ACCEPTED,
                    cond("Running", "False", "Failed"),
                    cond(
                        "Failed",
                        reason="PyTorchJobFailed",
                        message="PyTorchJob team-a/support-bot has failed because 1 Master "
                        "replica(s) failed.",
                    ),
                ],
            }
        ),
        "Degraded",
        "Failed: PyTorchJobFailed: PyTorchJob team-a/support-bot has failed because 1 Master "
        "replica(s) failed.",
    ),
    "failed validation": (
        job(
            {
                "phase": "Failed",
                "observedGeneration": 1,
                "conditions": [
                    cond(
                        "Validated",
                        "False",
                        "InvalidSpec",
                        "spec.hyperparameters.lora_dropout: 1.5 is not < 1",
                    ),
                    cond(
                        "Failed",
                        reason="InvalidSpec",
                        message="spec.hyperparameters.lora_dropout: 1.5 is not < 1",
                    ),
                ],
            }
        ),
        "Degraded",
        "Failed: InvalidSpec: spec.hyperparameters.lora_dropout: 1.5 is not < 1",
    ),
    "suspended": (
        job({**RUNNING, "phase": "Suspended", "progress": None, "metrics": None}),
        "Suspended",
        "Suspended (spec.suspend is true)",
    ),
    "spec changed, not yet handled": (
        job(RUNNING, generation=2),
        "Progressing",
        "Waiting for the operator to handle generation 2",
    ),
}


@pytest.mark.parametrize("case", list(FINETUNEJOBS))
def test_finetunejob(case):
    obj, status, message = FINETUNEJOBS[case]
    assert health("kubetune.io_FineTuneJob", obj) == (status, message)


def test_every_finetunejob_phase_has_a_case():
    phases = FineTuneJobStatus.model_json_schema()["properties"]["phase"]["anyOf"][0]["enum"]
    covered = {obj.get("status", {}).get("phase") for obj, _, _ in FINETUNEJOBS.values()}
    assert set(phases) <= covered


def hub(status: dict | None, generation: int = 1) -> dict:
    obj = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "curated", "namespace": "ml-platform", "generation": generation},
        "spec": {"models": [{"modelId": "llama", "source": "s3://models/llama/"}]},
    }
    if status is not None:
        ModelHubStatus.model_validate(status)
        obj["status"] = status
    return obj


def hub_status(ready: str, reason: str, message: str, generation: int = 1) -> dict:
    return {
        "conditions": [cond("Ready", ready, reason, message)],
        "models": [{"modelId": "llama", "ready": ready == "True"}],
        "modelCount": 1,
        "readyModels": 1 if ready == "True" else 0,
        "observedGeneration": generation,
    }


MODELHUBS = {
    "no status yet": (hub(None), "Progressing", "Waiting for the kubetune operator"),
    "ready": (
        hub(hub_status("True", "AllModelsReady", "1 models ready")),
        "Healthy",
        "1 models ready",
    ),
    "not ready": (
        hub(
            hub_status(
                "False",
                "ModelsNotReady",
                "1 of 1 models not ready; llama: s3://models/llama/config.json not found",
            )
        ),
        "Degraded",
        "1 of 1 models not ready; llama: s3://models/llama/config.json not found",
    ),
    "spec changed, not yet handled": (
        hub(hub_status("True", "AllModelsReady", "1 models ready"), generation=4),
        "Progressing",
        "Waiting for the operator to handle generation 4",
    ),
}


@pytest.mark.parametrize("case", list(MODELHUBS))
def test_modelhub(case):
    obj, status, message = MODELHUBS[case]
    assert health("kubetune.io_ModelHub", obj) == (status, message)


def pytorchjob(*conditions: dict, suspend: bool = False) -> dict:
    """A Training Operator v1.9 PyTorchJob: conditions accumulate (Created stays True)."""
    obj = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "support-bot", "namespace": "team-a"},
        "spec": {"runPolicy": {"suspend": suspend}, "pytorchReplicaSpecs": {}},
    }
    if conditions:
        obj["status"] = {"conditions": list(conditions), "replicaStatuses": {}}
    return obj


def tfcond(kind: str, status: str = "True", message: str = "") -> dict:
    return {
        "type": kind,
        "status": status,
        "reason": f"PyTorchJob{kind}",
        "message": message,
        "lastUpdateTime": "2026-01-05T10:00:00Z",
        "lastTransitionTime": "2026-01-05T10:00:00Z",
    }


CREATED = tfcond("Created", message="PyTorchJob support-bot is created.")
PYTORCHJOBS = {
    "no status yet": (pytorchjob(), "Progressing", "Waiting for the Training Operator"),
    "created": (pytorchjob(CREATED), "Progressing", "Created: PyTorchJob support-bot is created."),
    "running": (
        pytorchjob(CREATED, tfcond("Running", message="PyTorchJob team-a/support-bot is running.")),
        "Progressing",
        "Running: PyTorchJob team-a/support-bot is running.",
    ),
    "restarting": (
        pytorchjob(
            CREATED,
            tfcond("Running", "False"),
            tfcond(
                "Restarting",
                message="PyTorchJob support-bot is restarting because 1 Worker replica(s) failed.",
            ),
        ),
        "Progressing",
        "Restarting: PyTorchJob support-bot is restarting because 1 Worker replica(s) failed.",
    ),
    "succeeded": (
        pytorchjob(
            CREATED,
            tfcond("Running", "False"),
            tfcond("Succeeded", message="PyTorchJob team-a/support-bot successfully completed."),
        ),
        "Healthy",
        "Succeeded: PyTorchJob team-a/support-bot successfully completed.",
    ),
    "failed": (
        pytorchjob(
            CREATED,
            tfcond("Running", "False"),
            tfcond(
                "Failed",
                message="PyTorchJob team-a/support-bot has failed because 1 Master "
                "replica(s) failed.",
            ),
        ),
        "Degraded",
        "Failed: PyTorchJob team-a/support-bot has failed because 1 Master replica(s) failed.",
    ),
    "suspended": (
        pytorchjob(
            CREATED,
            tfcond("Running", "False"),
            tfcond("Suspended", message="PyTorchJob support-bot is suspended."),
            suspend=True,
        ),
        "Suspended",
        "Suspended: PyTorchJob support-bot is suspended.",
    ),
    "created suspended by Kueue": (
        pytorchjob(suspend=True),
        "Suspended",
        "Suspended (runPolicy.suspend is true)",
    ),
}


@pytest.mark.parametrize("case", list(PYTORCHJOBS))
def test_pytorchjob(case):
    obj, status, message = PYTORCHJOBS[case]
    assert health("kubeflow.org_PyTorchJob", obj) == (status, message)


def trainjob(*conditions: dict, jobs=None, suspend: bool = False) -> dict:
    """A Kubeflow Trainer v2.3 TrainJob: conditions Suspended, Complete and Failed (the latter
    two copied from its JobSet's), jobsStatus from the JobSet's replicated jobs."""
    obj = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "support-bot", "namespace": "team-a"},
        "spec": {"runtimeRef": {"name": "kubetune"}, "suspend": suspend},
    }
    status = {}
    if conditions:
        status["conditions"] = list(conditions)
    if jobs is not None:
        status["jobsStatus"] = [{"name": "node", "suspended": 0, "failed": 0, **jobs}]
    if status:
        obj["status"] = status
    return obj


def tjcond(kind: str, status: str, reason: str, message: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-05T10:00:00Z"}  # fmt: skip


RESUMED = tjcond("Suspended", "False", "Resumed", "TrainJob is resumed")
TRAINJOBS = {
    "no status yet": (trainjob(), "Progressing", "Waiting for Kubeflow Trainer"),
    "pods starting": (
        trainjob(jobs={"active": 1, "ready": 0, "succeeded": 0}),
        "Progressing",
        "Starting: 0 of 1 jobs ready",
    ),
    "running": (trainjob(jobs={"active": 1, "ready": 1, "succeeded": 0}), "Progressing", "Running"),
    "resumed and running": (
        trainjob(RESUMED, jobs={"active": 1, "ready": 1, "succeeded": 0}),
        "Progressing",
        "Running",
    ),
    "complete": (
        trainjob(
            tjcond("Complete", "True", "AllJobsCompleted", "jobset completed successfully"),
            jobs={"active": 0, "ready": 0, "succeeded": 1},
        ),
        "Healthy",
        "Complete: jobset completed successfully",
    ),
    "failed": (
        trainjob(
            tjcond("Failed", "True", "FailedJobs", "jobset failed due to one or more job failures"),
            jobs={"active": 0, "ready": 0, "succeeded": 0, "failed": 1},
        ),
        "Degraded",
        "Failed: jobset failed due to one or more job failures",
    ),
    "past its deadline": (
        trainjob(
            tjcond("Failed", "True", "DeadlineExceeded", "TrainJob exceeded its active deadline")
        ),
        "Degraded",
        "Failed: TrainJob exceeded its active deadline",
    ),
    "suspended": (
        trainjob(tjcond("Suspended", "True", "Suspended", "TrainJob is suspended"), suspend=True),
        "Suspended",
        "Suspended: TrainJob is suspended",
    ),
    "created suspended by Kueue": (
        trainjob(suspend=True),
        "Suspended",
        "Suspended (spec.suspend is true)",
    ),
}


@pytest.mark.parametrize("case", list(TRAINJOBS))
def test_trainjob(case):
    obj, status, message = TRAINJOBS[case]
    assert health("trainer.kubeflow.org_TrainJob", obj) == (status, message)


# --- what ships -----------------------------------------------------------------------------


def test_argocd_cm_carries_the_scripts_unchanged():
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    prefix = "resource.customizations.health."
    assert {key.removeprefix(prefix) for key in data} == set(SCRIPTS)
    for key, script in SCRIPTS.items():
        assert data[prefix + key] == script.read_text(), f"argocd-cm.yaml vs {script.name}"


def test_keys_name_our_crds():
    """Argo CD matches `<group>_<Kind>`: a renamed kind or group would silently never match."""
    names = set()
    for path in (REPO / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        names.add(f"{crd['spec']['group']}_{crd['spec']['names']['kind']}")
    assert names == {key for key in SCRIPTS if key.startswith("kubetune.io_")}


def test_example_application_syncs_a_jobs_folder_into_a_team_namespace():
    app = yaml.safe_load((ARGOCD / "application-team-jobs.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["spec"]["source"]["path"] and app["spec"]["destination"]["namespace"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
