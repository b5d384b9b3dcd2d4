"""What every trainer pod gets, whichever backend runs it: image, resources, env, volumes and
the locked-down security contexts. Each backend places these pieces where its API takes them."""

from kubetune.api.v1alpha1.trainer_config import CREDENTIAL_VARIABLES, DEFAULT_PATH
from kubetune.config import OperatorConfig
from kubetune.render import model_access
from kubetune.render.names import configmap_name
from kubetune.resolve.plan import Plan

TRAINER_UID = 10001  # the trainer image's non-root user (trainer-image/Dockerfile)
SCRATCH = "/scratch"
# Each channel's Secret enters the pod under its own prefix, so three sets of AWS_* keys do not
# overwrite one another; the trainer reads KUBETUNE_<CHANNEL>_AWS_* for that channel's URIs.
SECRET_PREFIXES = {
    "model": "KUBETUNE_MODEL_",
    "data": "KUBETUNE_DATA_",
    "output": "KUBETUNE_OUTPUT_",
}


def image(plan: Plan, config: OperatorConfig) -> str:
    """The job's own trainer image (spec.trainer.image), else the operator's for the
    accelerator."""
    own = plan.job.spec.trainer and plan.job.spec.trainer.image
    if own:
        return own
    accelerator = plan.compute.accelerator
    return getattr(config.images, accelerator if accelerator != "none" else "cpu")


def resources(plan: Plan, config: OperatorConfig) -> dict:
    compute = plan.compute
    # Limits equal to requests: Guaranteed QoS, the last pods a node evicts under pressure.
    limits = {"cpu": str(compute.cpu), "memory": str(compute.memory)}
    if compute.resource_name:
        limits[compute.resource_name] = str(compute.accelerators)
    # The scratch emptyDir holds the model and data copies: the scheduler must find the disk.
    requests = {**limits, "ephemeral-storage": str(config.scratch_size)}
    return {"requests": requests, "limits": limits}


def env(plan: Plan) -> list[dict]:
    return [
        {"name": "KUBETUNE_CONFIG", "value": DEFAULT_PATH},
        {"name": "KUBETUNE_SCRATCH", "value": SCRATCH},
        *model_access.env(plan),  # the presigned model URLs' file, where the hub gives those
        *trainer_env(plan),
    ]


def trainer_env(plan: Plan) -> list[dict]:
    """spec.trainer.env, for the recipe's parts (a Secret's key stays a reference)."""
    own = plan.job.spec.trainer and plan.job.spec.trainer.env
    return [variable.model_dump(by_alias=True, exclude_none=True) for variable in own or []]


def secret_env_from(plan: Plan) -> list[dict]:
    """Each channel's whole Secret, under its prefix."""
    return [
        {"prefix": SECRET_PREFIXES[channel], "secretRef": {"name": name}}
        for channel, name in sorted(plan.secrets.items())
    ]


def secret_env(plan: Plan) -> list[dict]:
    """The same variables one by one, for APIs without envFrom: a key the Secret lacks stays
    unset (optional), as envFrom leaves it."""
    return [
        {
            "name": SECRET_PREFIXES[channel] + variable,
            "valueFrom": {"secretKeyRef": {"name": name, "key": variable, "optional": True}},
        }
        for channel, name in sorted(plan.secrets.items())
        for variable in CREDENTIAL_VARIABLES
    ]


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def volumes(plan: Plan, config: OperatorConfig) -> list[dict]:
    return [
        {"name": "config", "configMap": {"name": configmap_name(plan.job.metadata.name)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(config.shm_size)}},
        {"name": "scratch", "emptyDir": {"sizeLimit": str(config.scratch_size)}},
        {"name": "tmp", "emptyDir": {}},
        *model_access.volumes(plan),
    ]


def volume_mounts(plan: Plan) -> list[dict]:
    return [
        # The ConfigMap's one key, CONFIG_KEY, appears as DEFAULT_PATH.
        {"name": "config", "mountPath": "/etc/kubetune", "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH},
        {"name": "tmp", "mountPath": "/tmp"},
        *model_access.volume_mounts(plan),
    ]


def placement(plan: Plan, config: OperatorConfig) -> dict:
    """nodeSelector, tolerations and service account, where set."""
    compute, found = plan.compute, {}
    if compute.node_selector:
        found["nodeSelector"] = dict(compute.node_selector)
    if compute.tolerations:
        found["tolerations"] = [dict(t) for t in compute.tolerations]
    if config.trainer_service_account:
        found["serviceAccountName"] = config.trainer_service_account
    return found
