"""The Kubeflow PyTorchJob (kubeflow.org/v1) that runs the trainer: a Master pod, plus Worker
pods when nodes > 1, each running torchrun with one process per accelerator."""

import copy

from kubetune.api.v1alpha1.exits import TERMINATION_MESSAGE_PATH
from kubetune.api.v1alpha1.finetunejob import RunPolicy
from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH
from kubetune.config import OperatorConfig
from kubetune.render.names import (
    JOB_LABEL,
    QUEUE_LABEL,
    configmap_name,
    owner_reference,
    pytorchjob_name,
)
from kubetune.resolve.plan import Plan

CONTAINER = "pytorch"  # the Training Operator finds the training container by this name
TRAINER_UID = 10001  # the trainer image's non-root user (trainer-image/Dockerfile)
SCRATCH = "/scratch"
# Each channel's Secret enters the pod under its own prefix, so three sets of AWS_* keys do not
# overwrite one another; the trainer reads KUBETUNE_<CHANNEL>_AWS_* for that channel's URIs.
SECRET_PREFIXES = {
    "model": "KUBETUNE_MODEL_",
    "data": "KUBETUNE_DATA_",
    "output": "KUBETUNE_OUTPUT_",
}


def render_pytorchjob(plan: Plan, config: OperatorConfig, owner: dict) -> dict:
    job, spec, compute = plan.job.metadata, plan.job.spec, plan.compute
    labels = {JOB_LABEL: job.name}
    queue = (spec.scheduling and spec.scheduling.queue_name) or config.default_queue_name
    metadata_labels = {**labels, **({QUEUE_LABEL: queue} if queue else {})}
    pod = pod_template(plan, config, labels)
    # ExitCode: the trainer's exit codes 1-127 fail the job at once, 128-255 (preemption, OOM,
    # a storage outage) recreate the pod (kubetune.api.v1alpha1.exits).
    replicas = {"Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": pod}}
    if compute.nodes > 1:
        replicas["Worker"] = {
            "replicas": compute.nodes - 1,
            "restartPolicy": "ExitCode",
            "template": copy.deepcopy(pod),  # not shared: YAML would print an anchor
        }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": pytorchjob_name(job.name),
            "namespace": job.namespace,
            "labels": metadata_labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "nprocPerNode": str(compute.processes_per_node),
            "runPolicy": run_policy(plan, queue),
            "pytorchReplicaSpecs": replicas,
        },
    }


def run_policy(plan: Plan, queue: str | None) -> dict:
    spec = plan.job.spec
    given = spec.run_policy
    policy = {
        "backoffLimit": (given or RunPolicy()).retries,
        "cleanPodPolicy": (given and given.clean_pod_policy) or "None",
        # Kueue admits a job by unsuspending it; without Kueue, spec.suspend decides.
        "suspend": bool(spec.suspend) or queue is not None,
        # Read only with a gang scheduler (Volcano, scheduler-plugins): all pods or none. Its
        # `queue` is a Volcano queue, not Kueue's: the Kueue queue is the label alone.
        "schedulingPolicy": {"minAvailable": plan.compute.nodes},
    }
    if given and given.active_deadline_seconds is not None:
        policy["activeDeadlineSeconds"] = given.active_deadline_seconds
    if given and given.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = given.ttl_seconds_after_finished
    if spec.scheduling and spec.scheduling.priority_class_name:
        policy["schedulingPolicy"]["priorityClass"] = spec.scheduling.priority_class_name
    return policy


def pod_template(plan: Plan, config: OperatorConfig, labels: dict) -> dict:
    compute, spec = plan.compute, plan.job.spec
    pod = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A preempted trainer saves a checkpoint on SIGTERM before it exits.
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        # Storage access comes from Secrets (envFrom) or IRSA, whose webhook mounts its own
        # token: the trainer never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "containers": [container(plan, config)],
        "volumes": [
            {"name": "config", "configMap": {"name": configmap_name(plan.job.metadata.name)}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(config.shm_size)}},
            {"name": "scratch", "emptyDir": {"sizeLimit": str(config.scratch_size)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if compute.node_selector:
        pod["nodeSelector"] = dict(compute.node_selector)
    if compute.tolerations:
        pod["tolerations"] = [dict(t) for t in compute.tolerations]
    if spec.scheduling and spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    if config.trainer_service_account:
        pod["serviceAccountName"] = config.trainer_service_account
    return {"metadata": {"labels": dict(labels)}, "spec": pod}


def container(plan: Plan, config: OperatorConfig) -> dict:
    compute = plan.compute
    image = getattr(config.images, compute.accelerator if compute.accelerator != "none" else "cpu")
    # Limits equal to requests: Guaranteed QoS, the last pods a node evicts under pressure.
    limits = {"cpu": str(compute.cpu), "memory": str(compute.memory)}
    if compute.resource_name:
        limits[compute.resource_name] = str(compute.accelerators)
    # The scratch emptyDir holds the model and data copies: the scheduler must find the disk.
    requests = {**limits, "ephemeral-storage": str(config.scratch_size)}
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": config.images.pull_policy,
        "env": [
            {"name": "KUBETUNE_CONFIG", "value": DEFAULT_PATH},
            {"name": "KUBETUNE_SCRATCH", "value": SCRATCH},
        ],
        "envFrom": [
            {"prefix": SECRET_PREFIXES[channel], "secretRef": {"name": name}}
            for channel, name in sorted(plan.secrets.items())
        ],
        "resources": {"requests": requests, "limits": limits},
        # The launcher writes the failing rank's one-line message there (kubetune.api...exits).
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            # The ConfigMap's one key, CONFIG_KEY, appears as DEFAULT_PATH.
            {"name": "config", "mountPath": "/etc/kubetune", "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "scratch", "mountPath": SCRATCH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
