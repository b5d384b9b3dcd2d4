"""The mlflow callback against a real MLflow file store, read back with MlflowClient: the run,
its params, tags and metric histories; a restarted pod continues the same run; a server that
cannot be reached costs a warning, not the training."""

import math
import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from kubetune_trainer.callbacks import Control
from kubetune_trainer.registry import PartError
from tests.support.callbacks import build, loss_at, run_events, stand_in_recipe, step_event


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    # MLflow 3 keeps its file store for existing users only: opted in here, as a user would.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def only_run(uri: str, experiment: str = "team-a/support-bot"):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    (run,) = client.search_runs([found.experiment_id])
    return client, run


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_a_run_with_params_tags_and_metric_histories(tmp_path, store):
    recipe = stand_in_recipe(tmp_path)
    run_events([build("mlflow", {"trackingUri": store}, recipe)], recipe, epochs=2)
    client, run = only_run(store)
    assert run.info.run_name == "support-bot" and run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.002" and run.data.params["lora_r"] == "4"
    assert set(run.data.params) == set(recipe.hp.model_dump())
    assert {k: v for k, v in run.data.tags.items() if k.startswith("kubetune.")} == {
        "kubetune.job.uid": "uid-1",
        "kubetune.job.name": "support-bot",
        "kubetune.job.namespace": "team-a",
        "kubetune.model": "tiny-llama",
        "kubetune.output": recipe.config.output.uri,
    }
    train = history(client, run, "train/loss")
    assert [s for s, _ in train] == list(range(1, 11))
    assert [v for _, v in train] == pytest.approx([loss_at(s) for s in range(1, 11)])
    assert history(client, run, "train/learning_rate")[0] == (1, pytest.approx(9e-4))
    assert history(client, run, "eval/loss") == [(5, 3.0), (10, 2.5)]
    assert history(client, run, "eval/perplexity")[1] == (10, pytest.approx(math.exp(2.5)))
    assert run.data.metrics["final/eval_loss"] == 2.5
    assert run.data.metrics["final/best_epoch"] == 2
    assert run.data.metrics["final/tokens_per_second"] == 2000


def test_a_restarted_pod_continues_the_run_of_its_job(tmp_path, store):
    first = stand_in_recipe(tmp_path)
    callback = build("mlflow", {"trackingUri": store}, first)
    run_events([callback], first, epochs=2, end=False)  # the pod dies before the end
    assert callback.stop(30)  # once what the loop handed the thread was sent
    again = stand_in_recipe(tmp_path)
    run_events([build("mlflow", {"trackingUri": store}, again)], again, epochs=2, first_epoch=2)
    client, run = only_run(store)  # one run, not two
    assert run.info.status == "FINISHED"
    steps = [s for s, _ in history(client, run, "train/loss")]
    assert steps == sorted(list(range(1, 11)) + list(range(6, 11)))  # epoch 2 was redone
    # Another job (another uid) with the same name gets a run of its own.
    other = stand_in_recipe(tmp_path, uid="uid-2")
    run_events([build("mlflow", {"trackingUri": store}, other)], other, epochs=1)
    found = client.search_runs([run.info.experiment_id])
    assert sorted(r.data.tags["kubetune.job.uid"] for r in found) == ["uid-1", "uid-2"]


def test_experiment_and_run_name_options(tmp_path, store):
    recipe = stand_in_recipe(tmp_path)
    options = {"trackingUri": store, "experiment": "sweeps", "runName": "lr-2e-3"}
    run_events([build("mlflow", options, recipe)], recipe, epochs=1)
    _, run = only_run(store, "sweeps")
    assert run.info.run_name == "lr-2e-3"


def test_an_unreachable_server_is_a_warning_and_never_blocks_training(
    tmp_path, monkeypatch, caplog
):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    recipe = stand_in_recipe(tmp_path)
    options = {"trackingUri": f"http://127.0.0.1:{port}", "endTimeoutSeconds": 10}
    callback = build("mlflow", options, recipe)
    started = time.monotonic()
    for step in range(1, 201):
        callback.on_step(recipe, step_event(1, step, 200, 200), Control())
    assert time.monotonic() - started < 1  # the loop only appended
    run_events([callback], recipe, epochs=1, steps_per_epoch=5)
    assert time.monotonic() - started < 15
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "mlflow" in r.message]
    assert len(warnings) == 1, [r.message for r in warnings]
    assert f"127.0.0.1:{port}" in warnings[0].message
    assert callback.pending  # kept for a later try


def test_other_ranks_do_not_talk_to_the_server(tmp_path, store):
    recipe = stand_in_recipe(tmp_path, rank=1, world_size=2)
    callback = build("mlflow", {"trackingUri": store}, recipe)
    run_events([callback], recipe)
    assert not (tmp_path / "mlruns").exists()


def test_the_tracking_uri_is_required(tmp_path):
    with pytest.raises(PartError, match=r"callbacks\[0\]\.options\.trackingUri: Field required"):
        build("mlflow", {}, stand_in_recipe(tmp_path))
