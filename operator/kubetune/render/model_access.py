"""The Secret holding a job's presigned model URLs (hubs with storage.access: presigned), and
how trainer pods get it: a read-only volume and the variable naming the file."""

from kubetune.api.v1alpha1.model_urls import MOUNT_DIR, URLS_ENV, URLS_KEY, PresignedModel
from kubetune.render.names import JOB_LABEL, model_urls_name, owner_reference
from kubetune.resolve.plan import Plan

VOLUME = "model-urls"
EXPIRES_ANNOTATION = "kubetune.io/expires-at"  # when the URLs stop working: no secret in it
SOURCE_ANNOTATION = "kubetune.io/model-source"
PLACEHOLDER = "<a PresignedModel document: the operator signs it while the job runs>"


def presigned(plan: Plan) -> bool:
    return plan.model_access == "presigned"


def render_model_urls_secret(plan: Plan, owner: dict, model: PresignedModel | None) -> dict:
    """The Secret; `model` None: its shape only (kubetune render), with no URL in it."""
    job = plan.job.metadata
    annotations = {SOURCE_ANNOTATION: plan.model.source}
    if model is not None:
        annotations[EXPIRES_ANNOTATION] = model.expires_at
    value = PLACEHOLDER if model is None else model.model_dump_json(by_alias=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": model_urls_name(job.name),
            "namespace": job.namespace,
            "labels": {JOB_LABEL: job.name},
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "stringData": {URLS_KEY: value},
    }


def volumes(plan: Plan) -> list[dict]:
    if not presigned(plan):
        return []
    # 0440 with the pod's fsGroup: the trainer's group reads it, nobody writes it.
    secret = {"secretName": model_urls_name(plan.job.metadata.name), "defaultMode": 0o440}
    return [{"name": VOLUME, "secret": secret}]


def volume_mounts(plan: Plan) -> list[dict]:
    # Never a subPath: the kubelet updates a mounted Secret in place only without one, and a
    # pod still downloading must see the refreshed URLs (the trainer reads the file per file).
    return [{"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}] if presigned(plan) else []


def env(plan: Plan) -> list[dict]:
    return [{"name": URLS_ENV, "value": f"{MOUNT_DIR}/{URLS_KEY}"}] if presigned(plan) else []
