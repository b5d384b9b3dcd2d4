"""Where a training job stands, in one vocabulary whichever backend runs it: (state, reason,
message) with state one of TRAINING_STATES, and when it started and ended."""

from kubetune.render.backends import of
from kubetune.status.conditions import find

# Most decisive first: the first one that holds sets the phase. A PyTorchJob has a condition
# of each name; a TrainJob's are mapped onto them (training_state).
TRAINING_STATES = ("Succeeded", "Failed", "Suspended", "Restarting", "Running", "Created")
TRAINJOB_STATES = {"Complete": "Succeeded", "Failed": "Failed", "Suspended": "Suspended"}


def training_state(body: dict) -> tuple[str, str, str]:
    """(state, reason, message) of the training job."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if body["kind"] == "TrainJob":
        return _trainjob_state(body, conditions)
    for state in TRAINING_STATES:
        found = find(conditions, state)
        if found and found.get("status") == "True":
            return state, found.get("reason") or state, found.get("message") or ""
    return "Created", "Created", "waiting for the training operator"


def _trainjob_state(body: dict, conditions: list[dict]) -> tuple[str, str, str]:
    for kind, state in TRAINJOB_STATES.items():
        found = find(conditions, kind)
        if found and found.get("status") == "True":
            return state, found.get("reason") or state, found.get("message") or ""
    # No condition says "running": the JobSet's jobs do. A Job is ready once all its pods are.
    jobs = (body.get("status") or {}).get("jobsStatus") or []
    if jobs and all((j.get("ready") or 0) + (j.get("succeeded") or 0) >= 1 for j in jobs):
        return "Running", "Running", "trainer pods are running"
    if any(j.get("active") for j in jobs):
        return "Created", "Created", "trainer pods are starting"
    return "Created", "Created", "waiting for Kubeflow Trainer"


def times(body: dict, state: str, previous: dict, now: str) -> dict:
    """startTime and, once finished, completionTime. A PyTorchJob reports both; a TrainJob
    neither: its start is when it was first seen running, its end its final condition's time."""
    status = body.get("status") or {}
    if body["kind"] == "PyTorchJob":
        found = {"startTime": status.get("startTime")}
        if state in ("Succeeded", "Failed"):
            found["completionTime"] = status.get("completionTime")
        return {k: v for k, v in found.items() if v}
    found = {}
    start = previous.get("startTime") or (now if state in ("Running", "Restarting") else None)
    final = {"Succeeded": "Complete", "Failed": "Failed"}.get(state)
    if final:
        ended = (find(status.get("conditions") or [], final) or {}).get("lastTransitionTime")
        start = start or ended
        found["completionTime"] = ended
    found["startTime"] = start
    return {k: v for k, v in found.items() if v}


def container_name(body: dict) -> str:
    return of(body).container
