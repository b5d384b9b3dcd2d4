"""The Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1) that runs the trainer: one
JobSet `node` job of `nodes` pods from the chart's ClusterTrainingRuntime, each running torchrun
with one process per accelerator.

What is per job goes in the TrainJob: image, env, node count, processes and resources through
`spec.trainer`; volumes, placement, pod hardening and the pods' label through one runtime patch
of ours. What is the same for every job is in the runtime (charts/kubetune/templates/
trainingruntime.yaml): restart policy, the exit-code pod failure policy, the termination message
path and grace period, and no service account token. The grace period is there, not in our patch:
Trainer v2.3 drops a patch's terminationGracePeriodSeconds when it renders the JobSet again on
Kueue's admission, and JobSet then refuses the changed template as immutable."""

from kubetune.api.v1alpha1.finetunejob import RunPolicy
from kubetune.config import OperatorConfig
from kubetune.render import pod
from kubetune.render.names import JOB_LABEL, QUEUE_LABEL, owner_reference, trainjob_name
from kubetune.resolve.plan import Plan

GROUP, VERSION = "trainer.kubeflow.org", "v1alpha1"
NODE = "node"  # the runtime's replicated job and its container: the torch plugin's names
PATCH_MANAGER = "kubetune.io/operator"  # whose runtime patch it is (Trainer keys them by this)


def render_trainjob(plan: Plan, config: OperatorConfig, owner: dict) -> dict:
    job, spec, compute = plan.job.metadata, plan.job.spec, plan.compute
    labels = {JOB_LABEL: job.name}
    queue = (spec.scheduling and spec.scheduling.queue_name) or config.default_queue_name
    body = {
        "runtimeRef": {
            "name": config.training_runtime,
            "apiGroup": GROUP,
            "kind": "ClusterTrainingRuntime",
        },
        "trainer": {
            "image": pod.image(plan, config),
            "env": pod.env(plan) + pod.secret_env(plan),
            "numNodes": compute.nodes,
            "numProcPerNode": compute.processes_per_node,
            "resourcesPerNode": pod.resources(plan, config),
        },
        "runtimePatches": [
            {"manager": PATCH_MANAGER, "trainingRuntimeSpec": runtime_patch(plan, config, labels)}
        ],
        # Kueue admits a job by unsuspending it; without Kueue, spec.suspend decides.
        "suspend": bool(spec.suspend) or queue is not None,
    }
    deadline = (spec.run_policy or RunPolicy()).active_deadline_seconds
    if deadline is not None:
        body["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": trainjob_name(job.name),
            "namespace": job.namespace,
            "labels": {**labels, **({QUEUE_LABEL: queue} if queue else {})},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": body,
    }


def runtime_patch(plan: Plan, config: OperatorConfig, labels: dict) -> dict:
    """The pod template fields a runtime patch may set (Trainer's PodSpecPatch)."""
    pod_spec = {
        **pod.placement(plan, config),
        "securityContext": pod.pod_security_context(),
        "volumes": pod.volumes(plan, config),
        "containers": [
            {
                "name": NODE,
                "volumeMounts": pod.volume_mounts(plan),
                "securityContext": pod.container_security_context(),
            }
        ],
    }
    template = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    replicated = {"name": NODE, "template": {"spec": {"template": template}}}
    return {"template": {"spec": {"replicatedJobs": [replicated]}}}


def unsupported(plan: Plan) -> list[str]:
    """What the job asks for that a TrainJob cannot carry (Trainer v2.3 API), one line each."""
    spec, found = plan.job.spec, []
    if spec.scheduling and spec.scheduling.priority_class_name:
        found.append(
            "spec.scheduling.priorityClassName is not applied: a TrainJob's runtime patches "
            "cannot set a pod priority class (use a Kueue WorkloadPriorityClass, label "
            "kueue.x-k8s.io/priority-class, or a PyTorchJob backend)"
        )
    policy = spec.run_policy or RunPolicy()
    if policy.ttl_seconds_after_finished is not None:
        found.append(
            "spec.runPolicy.ttlSecondsAfterFinished is not applied: a TrainJob has no TTL "
            "(delete the FineTuneJob to remove its TrainJob)"
        )
    if policy.clean_pod_policy not in (None, "None"):
        found.append(
            "spec.runPolicy.cleanPodPolicy is not applied: a TrainJob's pods stay until it is "
            "deleted"
        )
    return found
