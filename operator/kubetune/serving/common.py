"""What every serving object shares: metadata naming the job and artifacts it serves (so
`kubectl get -l kubetune.io/finetunejob=NAME` finds a job's servers), and GPU resources."""

from kubetune.render.names import JOB_LABEL
from kubetune.serving.artifacts import Serving

ARTIFACTS_ANNOTATION = "kubetune.io/artifacts"
BASE_ANNOTATION = "kubetune.io/base-model"  # --weights adapter
JOB_UID_ANNOTATION = "kubetune.io/finetunejob-uid"


def selector(serving: Serving) -> dict[str, str]:
    return {"app.kubernetes.io/name": serving.name, "app.kubernetes.io/component": "model-server"}


def metadata(serving: Serving, name: str | None = None) -> dict:
    job_name = serving.job.split("/", 1)[1]
    annotations = {ARTIFACTS_ANNOTATION: serving.artifacts, JOB_UID_ANNOTATION: serving.job_uid}
    if serving.base:
        annotations[BASE_ANNOTATION] = serving.base
    return {
        "name": name or serving.name,
        "namespace": serving.namespace,
        "labels": {**selector(serving), JOB_LABEL: job_name},
        "annotations": annotations,
    }


def resources(serving: Serving) -> dict:
    # Limits equal to requests: Guaranteed QoS, the last pods a node evicts under pressure.
    limits = {
        "cpu": serving.resources.cpu,
        "memory": serving.resources.memory,
        "nvidia.com/gpu": str(serving.resources.gpus),
    }
    return {"requests": dict(limits), "limits": limits}
