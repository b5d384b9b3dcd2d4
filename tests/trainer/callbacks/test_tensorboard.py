"""The tensorboard callback: event files under OUTPUT/tensorboard/ that TensorBoard's own reader
(EventAccumulator, what `tensorboard --logdir` runs) reads back, scalar by scalar; uploaded at
evaluations and the end, never per step; a resumed run adds to the same folder."""

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kubetune_trainer.callbacks import Control
from kubetune_trainer.registry import PartError
from tests.support.callbacks import (
    build,
    eval_loss_at,
    loss_at,
    run_events,
    stand_in_recipe,
    step_event,
)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_scalars_per_step_and_epoch_read_back_from_the_output(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    run_events([build("tensorboard", None, recipe)], recipe, epochs=2, steps_per_epoch=5)
    found = scalars(tmp_path / "out" / "tensorboard")
    assert set(found) == {
        "train/loss",
        "train/learning_rate",
        "train/tokens_per_second",
        "eval/loss",
        "eval/perplexity",
    }
    assert [s for s, _ in found["train/loss"]] == list(range(1, 11))
    assert [v for _, v in found["train/loss"]] == pytest.approx([loss_at(s) for s in range(1, 11)])
    assert found["train/learning_rate"][0] == (1, pytest.approx(1e-3 * 0.9))
    assert found["train/tokens_per_second"][0] == (1, pytest.approx(1001 / 0.5))
    assert found["eval/loss"] == [(5, pytest.approx(3.0)), (10, pytest.approx(2.5))]
    assert found["eval/perplexity"][1] == (10, pytest.approx(math.exp(2.5)))


def test_nothing_is_uploaded_per_step(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    callback = build("tensorboard", None, recipe)
    for step in range(1, 4):
        callback.on_step(recipe, step_event(1, step, 5, 10), Control())
    assert not (tmp_path / "out").exists()
    run_events([callback], recipe, epochs=1, steps_per_epoch=5, end=False)  # an evaluation
    assert list((tmp_path / "out" / "tensorboard").iterdir())


def test_a_resumed_run_adds_its_own_event_file_to_the_same_folder(tmp_path):
    first = stand_in_recipe(tmp_path)
    run_events([build("tensorboard", None, first)], first, epochs=1, end=False)
    # The next start: another pod, so an empty scratch; same output.
    again = stand_in_recipe(tmp_path)
    again.scratch = tmp_path / "scratch-second-pod"
    run_events([build("tensorboard", None, again)], again, epochs=2, first_epoch=2)
    folder = tmp_path / "out" / "tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    found = scalars(folder)
    assert [s for s, _ in found["train/loss"]] == list(range(1, 11))
    assert [s for s, _ in found["eval/loss"]] == [5, 10]
    assert found["eval/loss"][0][1] == pytest.approx(eval_loss_at(1))


def test_other_ranks_write_nothing(tmp_path):
    recipe = stand_in_recipe(tmp_path, rank=1, world_size=2)
    run_events([build("tensorboard", None, recipe)], recipe)
    assert not (tmp_path / "out").exists() and not recipe.scratch.exists()


def test_options_name_a_folder_under_the_output(tmp_path):
    recipe = stand_in_recipe(tmp_path)
    options = {"folder": "runs/tb"}
    run_events([build("tensorboard", options, recipe)], recipe, epochs=1)
    assert scalars(tmp_path / "out" / "runs" / "tb")["eval/loss"][0][0] == 5
    with pytest.raises(PartError, match=r"callbacks\[0\]\.options\.folder: .*'\.\.'"):
        build("tensorboard", {"folder": "../elsewhere"}, recipe)
    with pytest.raises(PartError, match=r"options\.flushSecs: Extra inputs"):
        build("tensorboard", {"flushSecs": 5}, recipe)


def test_an_upload_that_fails_is_logged_once_and_training_goes_on(tmp_path, caplog):
    recipe = stand_in_recipe(tmp_path)
    (tmp_path / "out").write_text("a file where the output folder should be")
    run_events([build("tensorboard", None, recipe)], recipe, epochs=2)
    warnings = [r for r in caplog.records if "tensorboard: event files not uploaded" in r.message]
    assert len(warnings) == 1
