"""loss_curve.png and loss_curve.csv: a PNG of the expected size that matplotlib reads back,
with both curves and the best epoch drawn, the CSV with every step and the eval loss at each
epoch end."""

import csv
import math
import time

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from kubetune_trainer import losscurve


def run(epochs: int = 3, steps_per_epoch: int = 20):
    steps = [
        [1 + (s - 1) // steps_per_epoch, s, 5 * math.exp(-s / 20) + 1]
        for s in range(1, epochs * steps_per_epoch + 1)
    ]
    metrics = [{"epoch": e, "eval_loss": 2 + 1 / e} for e in range(1, epochs + 1)]
    return steps, metrics


def pixels_of(image: np.ndarray, colour: str) -> int:
    """Pixels within a small distance of `colour` (antialiased edges are blends)."""
    return int((np.abs(image[..., :3] - to_rgb(colour)).max(axis=-1) < 0.06).sum())


def test_png_shows_both_curves_and_csv_lists_every_step(tmp_path):
    steps, epochs = run()
    losscurve.write(tmp_path, steps, epochs, title="team-a/support-bot")
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(tmp_path / "loss_curve.png")
    assert image.shape[:2] == (losscurve.HEIGHT, losscurve.WIDTH)
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10  # not one colour
    assert pixels_of(image, losscurve.TRAIN) > 200 and pixels_of(image, losscurve.EVAL) > 100
    assert pixels_of(image, losscurve.BEST) > 20  # the best epoch's star
    rows = list(csv.DictReader((tmp_path / "loss_curve.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    evals = {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]}
    assert evals == {20: 3.0, 40: 2.5, 60: 2.33333}  # at the last step of each epoch
    assert float(rows[0]["train_loss"]) == float(f"{steps[0][2]:.6g}")


def test_the_figure_names_its_axes_the_best_epoch_and_the_job():
    steps, epochs = run()
    last = {e: s for e, s, _ in steps}
    figure = losscurve.plot(
        [(s, loss) for _, s, loss in steps],
        {e["epoch"]: (last[e["epoch"]], e["eval_loss"]) for e in epochs},
        {1: (1, 20), 2: (21, 40), 3: (41, 60)},
        "team-a/support-bot",
    )
    (ax,) = figure.axes
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss (per label token)"
    assert ax.get_title() == "team-a/support-bot"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "epoch boundary",
        "train loss",
        "eval loss (per epoch)",
        "best: epoch 3, 2.333",
    ]


def test_a_long_run_is_thinned_to_the_plot_width_and_quick(tmp_path):
    steps, epochs = run(epochs=5, steps_per_epoch=10_000)
    losscurve.write(tmp_path, *run(epochs=1))  # matplotlib's first-use costs, not timed
    started = time.monotonic()
    losscurve.write(tmp_path, steps, epochs)
    assert time.monotonic() - started < 5
    assert len(losscurve.thin([(s, loss) for _, s, loss in steps])) <= losscurve.MOST_POINTS
    assert sum(1 for _ in (tmp_path / "loss_curve.csv").open()) == 50_001


def test_a_diverged_loss_does_not_stop_the_export(tmp_path):
    steps, epochs = run(epochs=1)
    steps[5][2], epochs[0]["eval_loss"] = float("nan"), float("inf")
    losscurve.write(tmp_path, steps, epochs)
    assert pixels_of(imread(tmp_path / "loss_curve.png"), losscurve.TRAIN) > 0
    assert "nan" in (tmp_path / "loss_curve.csv").read_text()


def test_no_steps_still_gives_a_png(tmp_path):
    losscurve.write(tmp_path, [], [])
    assert imread(tmp_path / "loss_curve.png").shape[:2] == (losscurve.HEIGHT, losscurve.WIDTH)
    assert (tmp_path / "loss_curve.csv").read_text().splitlines() == [
        "step,epoch,train_loss,eval_loss"
    ]
