"""What the trainer pushes to Kubeflow Trainer's status endpoint: its UpdateTrainJobStatusRequest,
checked against the pinned Trainer's TrainJob CRD (status.trainerStatus)."""

import datetime

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from kubetune.api.v1alpha1 import ProgressReport
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.trainer_status import Endpoint, payload
from tests.support.upstream import trainer_crd, why_not

NOW = datetime.datetime(2026, 12, 2, 10, 0, 0, tzinfo=datetime.UTC)
RUNNING = ProgressReport(epoch=2, step=40, total_steps=100, percent=40, eta_seconds=91,
                         train_loss=1.23456, eval_loss=None, tokens_per_second=812.5)  # fmt: skip


def test_progress_becomes_percent_eta_and_metrics():
    status = payload(RUNNING, NOW)["trainerStatus"]
    assert status["progressPercentage"] == 40 and status["estimatedRemainingSeconds"] == 91
    assert status["metrics"] == [
        {"name": "train_loss", "value": "1.235"},
        {"name": "tokens_per_second", "value": "812.5"},
    ]
    assert status["lastUpdatedTime"] == "2026-12-02T10:00:00Z"
    update = {"percent": 99, "eta_seconds": 0, "state": "succeeded"}
    done = payload(RUNNING.model_copy(update=update), NOW)
    assert done["trainerStatus"]["progressPercentage"] == 100


def test_payload_fits_the_trainer_api():
    crd = trainer_crd("trainjobs")
    if not crd:
        pytest.skip(why_not())
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    trainer_status = schema["properties"]["status"]["properties"]["trainerStatus"]
    finished = RUNNING.model_copy(update={"state": "succeeded"})
    for report in (RUNNING, ProgressReport(step=0, total_steps=10), finished):
        body = payload(report, NOW)["trainerStatus"]
        errors = list(OAS30Validator(trainer_status).iter_errors(body))
        assert not errors, [e.message for e in errors]


def test_the_endpoint_is_read_once_from_the_env_trainer_sets():
    env = {
        "KUBEFLOW_TRAINER_SERVER_URL": "https://t.kubeflow-system.svc:10443/apis/x/status",
        "KUBEFLOW_TRAINER_SERVER_CA_CERT": "/var/run/secrets/kubeflow/trainer/ca.crt",
        "KUBEFLOW_TRAINER_SERVER_TOKEN": "/var/run/secrets/kubeflow/trainer/token",
    }
    endpoint = Runtime.from_env(env).trainer_status
    assert endpoint == Endpoint.from_env(env) and endpoint.token_file.name == "token"
    assert Runtime.from_env({}).trainer_status is None  # no gate: no pushes
