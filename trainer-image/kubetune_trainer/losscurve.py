"""loss_curve.png (train loss per step, eval loss per epoch) and loss_curve.csv among the
artifacts, drawn with the standard library alone: the trainer image has no plotting stack."""

import csv
import math
import struct
import zlib
from pathlib import Path

from kubetune.api.v1alpha1.outputs import LOSS_CURVE_CSV, LOSS_CURVE_PNG

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 28, 36, 40  # plot margins, in pixels
WHITE, GREY, BLACK = (255, 255, 255), (220, 220, 220), (40, 40, 40)
TRAIN, EVAL = (31, 119, 180), (255, 127, 14)  # blue and orange, as most plotting tools
# 3x5 pixel glyphs, rows top to bottom ('#' lit): enough for the numbers and words drawn.
GLYPHS = {
    "0": "###/#.#/#.#/#.#/###", "1": ".#./##./.#./.#./###", "2": "###/..#/###/#../###",
    "3": "###/..#/.##/..#/###", "4": "#.#/#.#/###/..#/..#", "5": "###/#../###/..#/###",
    "6": "###/#../###/#.#/###", "7": "###/..#/..#/.#./.#.", "8": "###/#.#/###/#.#/###",
    "9": "###/#.#/###/..#/###", ".": ".../.../.../.../.#.", "-": ".../.../###/.../...",
    "+": ".../.#./###/.#./...", "a": ".../##./..#/###/###", "e": ".../###/###/#../###",
    "i": ".#./.../.#./.#./.#.", "l": "##./.#./.#./.#./###", "n": ".../##./#.#/#.#/#.#",
    "o": ".../###/#.#/#.#/###", "p": ".../###/#.#/###/#..", "r": ".../#.#/##./#../#..",
    "s": ".../.##/##./..#/##.", "t": ".#./###/.#./.#./.##", "v": ".../#.#/#.#/#.#/.#.",
}  # fmt: skip


def write(folder: Path, step_losses: list[list], epochs: list[dict]) -> None:
    """`step_losses`: [epoch, step, train loss] per optimizer step; `epochs`: the metrics of
    each finished epoch (epoch, eval_loss). Eval points sit at the last step of their epoch."""
    last_step = {}
    for epoch, step, _ in step_losses:
        last_step[epoch] = max(step, last_step.get(epoch, 0))
    eval_at = {last_step[e["epoch"]]: e["eval_loss"] for e in epochs if e["epoch"] in last_step}
    with open(folder / LOSS_CURVE_CSV, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "epoch", "train_loss", "eval_loss"])
        for epoch, step, loss in step_losses:
            out.writerow([step, epoch, f"{loss:.6g}", _fmt(eval_at.get(step))])
    train = [(step, loss) for _, step, loss in step_losses if math.isfinite(loss)]
    evals = [(step, loss) for step, loss in eval_at.items() if math.isfinite(loss)]
    (folder / LOSS_CURVE_PNG).write_bytes(png(plot(thin(train, WIDTH - LEFT - RIGHT), evals)))


def thin(points: list[tuple], most: int) -> list[tuple]:
    """At most about `most` points, each the mean of a run of neighbours: a long run's curve
    has no more pixel columns than that, and drawing every step would only cost time."""
    size = math.ceil(len(points) / most) if points else 1
    if size <= 1:
        return points
    runs = [points[i : i + size] for i in range(0, len(points), size)]
    return [tuple(sum(v) / len(run) for v in zip(*run, strict=True)) for run in runs]


def plot(train: list[tuple], evals: list[tuple]) -> list[bytearray]:
    """RGB rows of the chart: grid, axes with tick labels, both curves and a legend."""
    rows = [bytearray(bytes(WHITE) * WIDTH) for _ in range(HEIGHT)]
    points = train + evals
    x_max = max((x for x, _ in points), default=1) or 1
    y_ticks = ticks(min((y for _, y in points), default=0), max((y for _, y in points), default=1))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def at(x: float, y: float) -> tuple[int, int]:
        px = LEFT + (x / x_max) * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (y - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM)
        return round(px), round(py)

    for y in y_ticks:
        _, py = at(0, y)
        line(rows, (LEFT, py), (WIDTH - RIGHT, py), GREY)
        label = f"{y:.3g}"
        text(rows, LEFT - 6 - 8 * len(label), py - 5, label, BLACK)
    for x in ticks(0, x_max):
        px, _ = at(x, y_lo)
        if x <= x_max:
            line(rows, (px, HEIGHT - BOTTOM), (px, HEIGHT - BOTTOM + 4), BLACK)
            text(rows, px - 4 * len(f"{x:g}"), HEIGHT - BOTTOM + 8, f"{x:g}", BLACK)
    line(rows, (LEFT, TOP), (LEFT, HEIGHT - BOTTOM), BLACK)
    line(rows, (LEFT, HEIGHT - BOTTOM), (WIDTH - RIGHT, HEIGHT - BOTTOM), BLACK)
    text(rows, (LEFT + WIDTH - RIGHT) // 2 - 16, HEIGHT - 14, "step", BLACK)
    for series, colour, marker in ((train, TRAIN, 0), (evals, EVAL, 3)):
        pixels = [at(x, y) for x, y in series]
        for a, b in zip(pixels, pixels[1:], strict=False):
            line(rows, a, b, colour, width=2)
        for px, py in pixels if marker else ():
            box(rows, px - marker, py - marker, 2 * marker + 1, 2 * marker + 1, colour)
    for i, (name, colour) in enumerate((("train loss", TRAIN), ("eval loss", EVAL))):
        box(rows, LEFT + 12 + 130 * i, 12, 12, 12, colour)
        text(rows, LEFT + 30 + 130 * i, 13, name, BLACK)
    return rows


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering lo..hi."""
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = (lo // step) * step
    values = [first]
    while values[-1] < hi - 1e-12 * step:
        values.append(values[-1] + step)
    return [round(v, 12) for v in values]


def line(rows, a: tuple[int, int], b: tuple[int, int], colour, width: int = 1) -> None:
    steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    for i in range(steps + 1):
        x = round(a[0] + (b[0] - a[0]) * i / steps)
        y = round(a[1] + (b[1] - a[1]) * i / steps)
        box(rows, x, y, width, width, colour)


def box(rows, x: int, y: int, w: int, h: int, colour) -> None:
    for row in range(max(y, 0), min(y + h, HEIGHT)):
        for col in range(max(x, 0), min(x + w, WIDTH)):
            rows[row][3 * col : 3 * col + 3] = bytes(colour)


def text(rows, x: int, y: int, words: str, colour, scale: int = 2) -> None:
    for i, char in enumerate(words):
        for r, bits in enumerate(GLYPHS.get(char, "").split("/")):
            for c, lit in enumerate(bits):
                if lit == "#":
                    box(rows, x + scale * (4 * i + c), y + scale * r, scale, scale, colour)


def png(rows: list[bytearray]) -> bytes:
    """8-bit RGB PNG: a signature and IHDR, IDAT (each row with filter type 0) and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", len(rows[0]) // 3, len(rows), 8, 2, 0, 0, 0)
    raw = b"".join(b"\0" + bytes(row) for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
