"""The loss-curve callback: collects every step's loss (through a resume too) and writes
loss_curve.png / loss_curve.csv into the artifacts on the main rank."""

import csv
import subprocess
import sys
from types import SimpleNamespace

from matplotlib.image import imread

from kubetune_trainer import losscurve
from kubetune_trainer.callbacks import CALLBACKS, EndEvent
from tests.support.callbacks import build, eval_loss_at, loss_at, run_events, stand_in_recipe


def curve(folder) -> list[dict]:
    return list(csv.DictReader((folder / "loss_curve.csv").open()))


def test_the_bundled_callbacks_are_registered_without_importing_their_libraries():
    assert {"loss-curve", "tensorboard", "mlflow"} <= set(CALLBACKS.names())
    # The trainer starts without them: each is imported when a job draws or selects it.
    code = (
        "import sys, kubetune_trainer.artifacts, kubetune_trainer.callbacks; "
        "print(sorted({'matplotlib', 'mlflow', 'tensorboardX'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_artifacts_get_the_curve_of_every_step_and_epoch(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    run_events([build("loss-curve", None, recipe)], recipe, epochs=2, steps_per_epoch=5)
    artifacts = recipe.scratch / "artifacts"
    rows = curve(artifacts)
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [
        (s, 1 + (s - 1) // 5) for s in range(1, 11)
    ]
    assert [float(r["train_loss"]) for r in rows] == [
        float(f"{loss_at(s):.6g}") for s in range(1, 11)
    ]
    evals = {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]}
    assert evals == {5: 3.0, 10: 2.5}
    image = imread(artifacts / "loss_curve.png")
    assert image.shape[:2] == (losscurve.HEIGHT, losscurve.WIDTH)


def test_other_ranks_write_nothing(tmp_path):
    recipe = stand_in_recipe(tmp_path, rank=1, world_size=2)
    run_events([build("loss-curve", None, recipe)], recipe)
    assert not recipe.scratch.exists()


def test_a_resumed_run_draws_the_whole_run_and_a_redone_step_once(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    first = build("loss-curve", None, recipe)
    run_events([first], recipe, epochs=1, steps_per_epoch=5, end=False)
    saved = first.state_dict()
    # The process dies after step 7; the checkpoint of step 5 is what the next start loads.
    run_events([first], recipe, epochs=2, steps_per_epoch=5, first_epoch=2, end=False)
    assert len(first.steps) == 10
    second = build("loss-curve", None, recipe)
    second.load_state_dict(saved)
    second.steps.extend([[2, 6, 9.0], [2, 7, 9.0]])  # steps the stopped run did before dying
    run_events([second], recipe, epochs=2, steps_per_epoch=5, first_epoch=2)
    rows = curve(recipe.scratch / "artifacts")
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert float(rows[6]["train_loss"]) == float(f"{loss_at(7):.6g}")  # the redone step's loss
    evals = {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]}
    assert evals == {5: eval_loss_at(1), 10: eval_loss_at(2)}


def test_metrics_as_objects_are_read_too(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    callback = build("loss-curve", None, recipe)
    run_events([callback], recipe, epochs=1, end=False)
    epochs = [SimpleNamespace(epoch=1, train_loss=2.0, eval_loss=2.75, eval_perplexity=15.6)]
    metrics = SimpleNamespace(best_epoch=1, epochs=epochs)
    (tmp_path / "artifacts").mkdir()
    callback.on_end(recipe, EndEvent(metrics, tmp_path / "artifacts"))
    rows = curve(tmp_path / "artifacts")
    assert [float(r["eval_loss"]) for r in rows if r["eval_loss"]] == [2.75]
