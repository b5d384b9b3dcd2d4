"""What the tests of Kubeflow Trainer v2 on the real control plane share: the smallest torch
ClusterTrainingRuntime and TrainJobs of it, with a runtimePatches entry of ours."""

RUNTIME = "kubetune-test-torch"
MANAGER = "kubetune.io/operator"  # our runtimePatches entry, as the operator would own it
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# The smallest torch runtime: one replicatedJob `node`, container `node`. The ancestor label is
# what makes the Trainer apply numNodes and resourcesPerNode to this Job (trainingruntime.go).
# backoffLimit 0: neither the Trainer nor JobSet sets one, and the Job default (6, with
# exponential back-off from 10 s) would retry a failed pod for minutes before the TrainJob fails.
CLUSTER_TRAINING_RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": RUNTIME, "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {"spec": {"replicatedJobs": [{
            "name": "node",
            "template": {
                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [
                    {"name": "node", "image": "busybox", "command": ["true"]}]}}},
            },
        }]}},
    },
}  # fmt: skip


def trainjob(name: str, namespace: str, nodes: int = 2, gpus: int = 8,
             annotations: dict | None = None, labels: dict | None = None,
             suspend: bool | None = None, pod_spec: dict | None = None,
             trainer: dict | None = None) -> dict:
    """A TrainJob of RUNTIME; `annotations` and `pod_spec` (tolerations by default) reach the
    pods through our runtimePatches entry."""
    pod = {"spec": pod_spec if pod_spec is not None else {"tolerations": [GPU_TOLERATION]}}
    if annotations:
        pod["metadata"] = {"annotations": annotations}
    spec = {
        "runtimeRef": {"name": RUNTIME},
        "trainer": {"numNodes": nodes, **(trainer or {})},
        "runtimePatches": [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": "node", "template": {"spec": {"template": pod}}}]}}}}],
    }  # fmt: skip
    if gpus:
        spec["trainer"]["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": gpus}}
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec}
