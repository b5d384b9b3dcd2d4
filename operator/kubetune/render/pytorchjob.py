"""The Kubeflow PyTorchJob (kubeflow.org/v1) that runs the trainer: a Master pod, plus Worker
pods when nodes > 1, each running torchrun with one process per accelerator."""

import copy

from kubetune.api.v1alpha1.exits import TERMINATION_MESSAGE_PATH
from kubetune.api.v1alpha1.finetunejob import RunPolicy
from kubetune.config import OperatorConfig
from kubetune.render import pod
from kubetune.render.names import (
    JOB_LABEL,
    QUEUE_LABEL,
    owner_reference,
    pytorchjob_name,
)
from kubetune.resolve.plan import Plan

CONTAINER = "pytorch"  # the Training Operator finds the training container by this name


def render_pytorchjob(plan: Plan, config: OperatorConfig, owner: dict) -> dict:
    job, spec, compute = plan.job.metadata, plan.job.spec, plan.compute
    labels = {JOB_LABEL: job.name}
    queue = (spec.scheduling and spec.scheduling.queue_name) or config.default_queue_name
    metadata_labels = {**labels, **({QUEUE_LABEL: queue} if queue else {})}
    template = pod_template(plan, config, labels)
    # ExitCode: the trainer's exit codes 1-127 fail the job at once, 128-255 (preemption, OOM,
    # a storage outage) recreate the pod (kubetune.api.v1alpha1.exits).
    replicas = {"Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template}}
    if compute.nodes > 1:
        replicas["Worker"] = {
            "replicas": compute.nodes - 1,
            "restartPolicy": "ExitCode",
            "template": copy.deepcopy(template),  # not shared: YAML would print an anchor
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
    spec = plan.job.spec
    body = {
        "securityContext": pod.pod_security_context(),
        # A preempted trainer saves a checkpoint on SIGTERM before it exits.
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        # Storage access comes from Secrets (envFrom) or IRSA, whose webhook mounts its own
        # token: the trainer never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "containers": [container(plan, config)],
        "volumes": pod.volumes(plan, config),
    }
    placement = pod.placement(plan, config)
    for key in ("nodeSelector", "tolerations"):
        if key in placement:
            body[key] = placement[key]
    if spec.scheduling and spec.scheduling.priority_class_name:
        body["priorityClassName"] = spec.scheduling.priority_class_name
    if "serviceAccountName" in placement:
        body["serviceAccountName"] = placement["serviceAccountName"]
    return {"metadata": {"labels": dict(labels)}, "spec": body}


def container(plan: Plan, config: OperatorConfig) -> dict:
    return {
        "name": CONTAINER,
        "image": pod.image(plan, config),
        "imagePullPolicy": config.images.pull_policy,
        "env": pod.env(plan),
        "envFrom": pod.secret_env_from(plan),
        "resources": pod.resources(plan, config),
        # The launcher writes the failing rank's one-line message there (kubetune.api...exits).
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": pod.volume_mounts(plan),
        "securityContext": pod.container_security_context(),
    }
