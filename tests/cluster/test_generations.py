"""Clusters with one generation of Kubeflow training (fixtures.py): the v1 plane serves
PyTorchJob and no Trainer API, the v2 plane TrainJob and no PyTorchJob; in each, Kueue integrates
the kind that is there (a queued job of it is suspended by Kueue's webhook)."""

import json

import pytest

from tests.cluster.e2e_support import ensure_namespace, get, kubectl
from tests.cluster.trainer_support import CLUSTER_TRAINING_RUNTIME, trainjob

pytestmark = pytest.mark.cluster
NS = "generation"
QUEUED = {"kueue.x-k8s.io/queue-name": "none"}  # no such LocalQueue: it stays suspended


def api_groups(plane) -> set[str]:
    return {g["name"] for g in json.loads(kubectl(plane, "get", "--raw", "/apis"))["groups"]}


def test_the_v1_plane_serves_pytorchjobs_only(training_operator_cluster):
    plane = training_operator_cluster
    groups = api_groups(plane)
    assert "kubeflow.org" in groups
    assert not {"trainer.kubeflow.org", "jobset.x-k8s.io"} & groups
    ensure_namespace(plane, NS)
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
           "metadata": {"name": "queued", "namespace": NS, "labels": QUEUED},
           "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {
               "containers": [{"name": "pytorch", "image": "busybox"}]}}}}}}  # fmt: skip
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(job))
    assert get(plane, "pytorchjob", "-n", NS, "queued")["spec"]["runPolicy"]["suspend"] is True


def test_the_v2_plane_serves_trainjobs_only(trainer_cluster):
    plane = trainer_cluster
    groups = api_groups(plane)
    assert {"trainer.kubeflow.org", "jobset.x-k8s.io"} <= groups
    assert "kubeflow.org" not in groups
    ensure_namespace(plane, NS)
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(CLUSTER_TRAINING_RUNTIME))
    job = trainjob("queued", NS, labels=QUEUED)  # the Trainer refuses one of no runtime
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(job))
    assert get(plane, "trainjob", "-n", NS, "queued")["spec"]["suspend"] is True
