"""loss_curve.png and loss_curve.csv: a valid PNG (checked by decoding it here) with both
curves drawn, the CSV with every step and the eval loss at each epoch end."""

import csv
import math
import struct
import time
import zlib
from collections import Counter

from kubetune_trainer import losscurve


def decode(data: bytes) -> tuple[int, int, Counter]:
    """(width, height, pixel colour counts) of an 8-bit RGB PNG, every chunk CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour_type) == (8, 2)  # 8-bit RGB
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    pixels = Counter()
    for y in range(height):
        row = raw[y * stride : (y + 1) * stride]
        assert row[0] == 0  # filter type None
        pixels.update(tuple(row[x : x + 3]) for x in range(1, stride, 3))
    return width, height, pixels


def run(epochs: int = 3, steps_per_epoch: int = 20):
    steps = [
        [1 + (s - 1) // steps_per_epoch, s, 5 * math.exp(-s / 20) + 1]
        for s in range(1, epochs * steps_per_epoch + 1)
    ]
    metrics = [{"epoch": e, "eval_loss": 2 + 1 / e} for e in range(1, epochs + 1)]
    return steps, metrics


def test_png_shows_both_curves_and_csv_lists_every_step(tmp_path):
    steps, epochs = run()
    losscurve.write(tmp_path, steps, epochs)
    width, height, pixels = decode((tmp_path / "loss_curve.png").read_bytes())
    assert (width, height) == (losscurve.WIDTH, losscurve.HEIGHT)
    assert pixels[losscurve.TRAIN] > 200 and pixels[losscurve.EVAL] > 200
    rows = list(csv.DictReader((tmp_path / "loss_curve.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    evals = {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]}
    assert evals == {20: 3.0, 40: 2.5, 60: 2.33333}  # at the last step of each epoch
    assert float(rows[0]["train_loss"]) == float(f"{steps[0][2]:.6g}")


def test_ticks_are_round_and_cover_the_range():
    assert losscurve.ticks(0.37, 2.9) == [0.0, 1.0, 2.0, 3.0]
    assert losscurve.ticks(1.23, 1.31) == [1.22, 1.24, 1.26, 1.28, 1.3, 1.32]
    assert losscurve.ticks(0, 20000) == [0, 5000, 10000, 15000, 20000]
    assert losscurve.ticks(2.0, 2.0)[0] < 2.0 < losscurve.ticks(2.0, 2.0)[-1]  # one value


def test_a_long_run_is_thinned_to_the_plot_width_and_quick(tmp_path):
    steps, epochs = run(epochs=5, steps_per_epoch=10_000)
    started = time.monotonic()
    losscurve.write(tmp_path, steps, epochs)
    assert time.monotonic() - started < 5
    assert len(losscurve.thin([(s, loss) for _, s, loss in steps], 500)) <= 500
    assert sum(1 for _ in (tmp_path / "loss_curve.csv").open()) == 50_001


def test_a_diverged_loss_does_not_stop_the_export(tmp_path):
    steps, epochs = run(epochs=1)
    steps[5][2], epochs[0]["eval_loss"] = float("nan"), float("inf")
    losscurve.write(tmp_path, steps, epochs)
    _, _, pixels = decode((tmp_path / "loss_curve.png").read_bytes())
    assert pixels[losscurve.TRAIN] > 0
    assert "nan" in (tmp_path / "loss_curve.csv").read_text()
