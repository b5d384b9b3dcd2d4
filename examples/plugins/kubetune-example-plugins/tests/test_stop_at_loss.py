"""The stop-at-loss callback: when it asks the loop to stop, its state across a resume, and its
options schema."""

import importlib.metadata
import math

import pytest
from kubetune_example_plugins.stop_at_loss import STOP_AT_LOSS, StopAtLossOptions

from kubetune_trainer.callbacks import Control, StepEvent
from kubetune_trainer.registry import PartError, Registry


def event(step: int, loss: float) -> StepEvent:
    return StepEvent(
        epoch=1, step=step, epoch_step=step, steps_per_epoch=100, total_steps=100, loss=loss,
        learning_rate=1e-4, tokens=100, padded_tokens=100, seconds=0.1,
    )  # fmt: skip


def steps(callback, losses: list[float], first: int = 1) -> list[str | None]:
    """The stop reason the callback gives at each step (None: carry on)."""
    reasons = []
    for step, loss in enumerate(losses, start=first):
        control = Control()
        callback.on_step(None, event(step, loss), control)
        reasons.append(control.stop)
    return reasons


def build(**options):
    return STOP_AT_LOSS.build(StopAtLossOptions(**options), None)


def test_stops_once_the_mean_of_the_window_is_under_the_threshold():
    reasons = steps(build(threshold=1.0, window=3), [3.0, 0.5, 0.5, 0.5, 0.2])
    # steps 1-3: mean 1.33; steps 2-4: 0.5, under 1.0
    assert reasons[:3] == [None, None, None]
    assert (
        reasons[3] == "stop-at-loss: mean train loss 0.5000 of the last 3 steps is under 1 (step 4)"
    )
    assert reasons[4] is not None  # asked again while it holds: the loop may stop at any step


def test_a_window_not_yet_full_never_stops():
    assert steps(build(threshold=10.0, window=5), [0.1] * 4) == [None] * 4


def test_a_non_finite_loss_in_the_window_does_not_stop():
    assert steps(build(threshold=1.0, window=2), [math.nan, 0.1, math.inf, 0.1]) == [None] * 4


def test_a_resumed_run_goes_on_counting_where_the_checkpoint_was():
    losses = [3.0, 3.0, 0.4, 0.4, 0.4, 0.4]
    whole = steps(build(threshold=1.0, window=4), losses)
    before = build(threshold=1.0, window=4)
    steps(before, losses[:3])
    after = build(threshold=1.0, window=4)  # a new process, restored from the checkpoint
    after.load_state_dict(before.state_dict())
    assert steps(after, losses[3:], first=4) == whole[3:]
    assert whole == [None] * 5 + [whole[5]]  # steps 3-6 average 0.4; steps 2-5 1.05
    assert steps(build(threshold=1.0, window=4), losses[3:], first=4) == [None] * 3  # no state


def test_a_smaller_window_on_resume_keeps_the_newest_losses():
    before = build(threshold=1.0, window=4)
    steps(before, [5.0, 5.0, 0.5, 0.5])
    after = build(threshold=1.0, window=2)
    after.load_state_dict(before.state_dict())
    assert after.state_dict() == {"losses": [0.5, 0.5]}


@pytest.fixture
def callbacks():
    registry = Registry("callback", "test.none")
    registry.add(STOP_AT_LOSS)
    return registry


@pytest.mark.parametrize(
    "options, problem",
    [
        (None, "threshold: Field required"),
        ({"threshold": 0}, "threshold: Input should be greater than 0 (got 0)"),
        ({"threshold": 1, "window": 0}, "window: Input should be greater than or equal to 1 "
         "(got 0)"),
        ({"threshold": 1, "windw": 3}, "windw: Extra inputs are not permitted (got 3)"),
    ],
)  # fmt: skip
def test_bad_options_fail_with_their_field_path(callbacks, options, problem):
    with pytest.raises(PartError) as raised:
        callbacks.choose("stop-at-loss", options, "spec.trainer.callbacks[0]")
    assert str(raised.value) == f"spec.trainer.callbacks[0].options.{problem}"


def test_window_defaults_to_five(callbacks):
    chosen = callbacks.choose("stop-at-loss", {"threshold": 0.5}, "spec.trainer.callbacks[0]")
    assert chosen.options == StopAtLossOptions(threshold=0.5, window=5)


def test_the_installed_package_registers_the_callback_by_its_entry_point():
    from kubetune_trainer.callbacks import CALLBACKS

    points = importlib.metadata.entry_points(group="kubetune.callbacks", name="stop-at-loss")
    assert points, "install the package first: pip install --no-deps -e ."
    assert CALLBACKS.get("stop-at-loss", "test") is STOP_AT_LOSS
