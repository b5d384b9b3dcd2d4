"""The ConfigMap holding the TrainerConfig, mounted at /etc/kubetune/config.json."""

from kubetune.render.names import CONFIG_KEY, JOB_LABEL, configmap_name, owner_reference
from kubetune.resolve.plan import Plan


def render_configmap(plan: Plan, owner: dict) -> dict:
    job = plan.job.metadata
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
        "data": {CONFIG_KEY: plan.trainer_config.model_dump_json(by_alias=True, indent=2)},
    }
