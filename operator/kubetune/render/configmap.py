"""The ConfigMap holding the TrainerConfig, mounted at /etc/kubetune/config.json."""

from kubetune.api.v1alpha1.finetunejob import RunPolicy
from kubetune.render.names import CONFIG_KEY, JOB_LABEL, configmap_name, owner_reference
from kubetune.resolve.plan import Plan


def render_configmap(plan: Plan, owner: dict) -> dict:
    job = plan.job.metadata
    # The Training Operator does not count recreated pods against backoffLimit (restart policy
    # ExitCode): the trainer counts its own starts in the output folder instead.
    policy = plan.job.spec.run_policy or RunPolicy()
    trainer_config = plan.trainer_config.model_copy(update={"max_attempts": policy.retries + 1})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(job.name),
            "namespace": job.namespace,
            "labels": {JOB_LABEL: job.name},
            "ownerReferences": [owner_reference(owner)],
        },
        # Names and URIs only: credentials reach the pod as Secret references (envFrom).
        "data": {CONFIG_KEY: trainer_config.model_dump_json(by_alias=True, indent=2)},
    }
