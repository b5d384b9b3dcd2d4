"""Reconcile decisions that need no API server."""

from kubetune.config import OperatorConfig
from kubetune.controller.finetunejob import finished, reconcile


def test_a_spec_our_types_refuse_fails_once_instead_of_retrying():
    body = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "bot", "namespace": "team-a", "uid": "u", "generation": 1},
        "spec": {"model": {"hubRef": {"name": "h"}, "modelId": "m"}, "data": {"train": "x"}},
    }
    outcome = reconcile(body, cluster=None, config=OperatorConfig(), now="T")
    assert outcome.problem.reason == "InvalidSpec" and not outcome.problem.retry
    assert "spec.data.train: 'x': must be an s3://bucket/prefix URI" in outcome.problem.message
    assert outcome.status["phase"] == "Failed"


def test_only_training_outcomes_of_the_current_generation_are_final():
    assert finished({"phase": "Succeeded", "observedGeneration": 2, "trainingJob": {}}, 2)
    assert not finished({"phase": "Succeeded", "observedGeneration": 1, "trainingJob": {}}, 2)
    assert not finished({"phase": "Failed", "observedGeneration": 2}, 2)  # resolution: re-check
    assert not finished({"phase": "Running", "observedGeneration": 2, "trainingJob": {}}, 2)
