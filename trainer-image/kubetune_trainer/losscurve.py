"""loss_curve.png (train loss per step, eval loss per epoch, epoch boundaries, the best epoch)
and loss_curve.csv among the artifacts. matplotlib is imported on first use: the trainer
starts without paying for it."""

import csv
import math
from pathlib import Path

# 960 x 600 pixels: 6.4 x 4 inches at 150 dots per inch, sharp text in a browser or a README.
WIDTH, HEIGHT, DPI = 960, 600, 150
TRAIN, EVAL, BEST = "#1f77b4", "#ff7f0e", "#2ca02c"  # matplotlib's blue, orange and green
MOST_POINTS = 1000  # a long run's train curve: means of runs of neighbouring steps
MOST_EPOCH_LABELS = 12  # more would crowd the top of the plot; the boundaries still show


def write(
    folder: Path, step_losses: list[list], epochs: list[dict], title: str = "loss curve"
) -> None:
    """`step_losses`: [epoch, step, train loss] per optimizer step; `epochs`: the metrics of
    each finished epoch (epoch, eval_loss). Eval points sit at the last step of their epoch."""
    spans: dict[int, tuple[int, int]] = {}  # epoch -> (first step, last step)
    for epoch, step, _ in step_losses:
        first, last = spans.get(epoch, (step, step))
        spans[epoch] = (min(first, step), max(last, step))
    last_step = {epoch: last for epoch, (_, last) in spans.items()}
    eval_at = {last_step[e["epoch"]]: e["eval_loss"] for e in epochs if e["epoch"] in last_step}
    with open(folder / "loss_curve.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "epoch", "train_loss", "eval_loss"])
        for epoch, step, loss in step_losses:
            out.writerow([step, epoch, f"{loss:.6g}", _fmt(eval_at.get(step))])
    train = thin([(step, loss) for _, step, loss in step_losses if math.isfinite(loss)])
    evals = {
        e["epoch"]: (last_step[e["epoch"]], e["eval_loss"])
        for e in epochs
        if e["epoch"] in last_step and math.isfinite(e["eval_loss"])
    }
    figure = plot(train, evals, spans, title)
    figure.savefig(folder / "loss_curve.png", dpi=DPI)


def thin(points: list[tuple], most: int = MOST_POINTS) -> list[tuple]:
    """At most about `most` points, each the mean of a run of neighbours: a long run's curve
    has no more pixel columns than that, and every step of it would only be noise."""
    size = math.ceil(len(points) / most) if points else 1
    if size <= 1:
        return points
    runs = [points[i : i + size] for i in range(0, len(points), size)]
    return [tuple(sum(v) / len(run) for v in zip(*run, strict=True)) for run in runs]


def plot(train: list[tuple], evals: dict[int, tuple], spans: dict[int, tuple], title: str):
    """The figure: `train` (step, loss) points, `evals` epoch -> (step, loss) and `spans`
    epoch -> (first step, last step)."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    boundaries = sorted(last for _, last in spans.values())[:-1]  # between epochs
    for i, step in enumerate(boundaries):
        label = "epoch boundary" if i == 0 else None
        ax.axvline(step + 0.5, color="0.55", linestyle=":", linewidth=1.2, label=label, zorder=0)
    if 1 < len(spans) <= MOST_EPOCH_LABELS:  # "epoch N" above the middle of each epoch
        top = ax.secondary_xaxis("top")
        top.set_xticks([(a + b) / 2 for a, b in spans.values()], [f"epoch {e}" for e in spans])
        top.tick_params(length=0, labelsize="x-small", labelcolor="0.4")
    if train:
        ax.plot(*zip(*train, strict=True), color=TRAIN, linewidth=1.2, label="train loss")
    if evals:
        steps, losses = zip(*evals.values(), strict=True)
        style = {"marker": "o", "markersize": 5, "linestyle": "--", "linewidth": 1}
        ax.plot(steps, losses, color=EVAL, label="eval loss (per epoch)", **style)
        best = min(evals, key=lambda e: evals[e][1])  # lowest eval loss, as the trainer picks
        label = f"best: epoch {best}, {evals[best][1]:.4g}"
        ax.plot(
            *evals[best],
            color=BEST,
            marker="*",
            markersize=14,
            linestyle="none",
            label=label,
            zorder=3,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per label token)")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="y", color="0.92")
    ax.margins(x=0.01)
    if train or evals:
        ax.legend(fontsize="small", loc="best")
    return figure


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
