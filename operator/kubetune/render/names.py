"""Deterministic child names: a retried create finds its earlier self (409) instead of
making a second one."""

JOB_LABEL = "kubetune.io/finetunejob"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONFIG_KEY = "config.json"


def pytorchjob_name(job_name: str) -> str:
    return job_name  # its pods: NAME-master-0, NAME-worker-N (why names stop at 50 chars)


def trainjob_name(job_name: str) -> str:
    return job_name  # its pods: NAME-node-0-N (JobSet: job NAME-node-0, index N)


def configmap_name(job_name: str) -> str:
    return f"{job_name}-trainer-config"


def model_urls_name(job_name: str) -> str:
    return f"{job_name}-model-urls"  # the Secret of a presigned hub's model URLs


def owner_reference(job: dict) -> dict:
    """`job`: the FineTuneJob's metadata (name, uid); deleting it deletes the children."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "name": job["name"],
        "uid": job["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
