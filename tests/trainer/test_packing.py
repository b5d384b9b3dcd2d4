"""Packing: every token kept once, rows within budget, positions restart, no cross-sample loss."""

import random

import pytest

from kubetune_trainer.formats.samples import IGNORE_INDEX as IGNORE
from kubetune_trainer.packing import one_per_row, pack


def samples_of(lengths):
    start = 0
    out = []
    for n in lengths:
        ids = list(range(start, start + n))
        out.append((ids, ids.copy()))
        start += n
    return out


def test_every_token_lands_once_and_rows_stay_within_budget():
    rng = random.Random(0)
    lengths = [min(1024, max(1, int(rng.lognormvariate(5, 0.8)))) for _ in range(2000)]
    rows = pack(samples_of(lengths), 1024)
    tokens = sorted(t for row in rows for t in row.input_ids)
    assert tokens == list(range(sum(lengths)))
    assert all(len(row) <= 1024 for row in rows)
    fill = sum(lengths) / (len(rows) * 1024)
    assert fill > 0.95, f"rows only {fill:.0%} full"


def test_positions_restart_and_boundaries_carry_no_label():
    rows = pack(samples_of([3, 2, 4]), 10)
    (row,) = rows
    assert row.seq_lens == [4, 3, 2]  # longest first
    assert row.position_ids == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    starts = [0, 4, 7]
    assert [row.labels[s] for s in starts] == [IGNORE] * 3
    assert sum(label != IGNORE for label in row.labels) == 9 - 3


def test_packing_is_deterministic():
    data = samples_of([5, 9, 1, 7, 3, 3, 8])
    assert [r.input_ids for r in pack(data, 12)] == [r.input_ids for r in pack(data, 12)]


def test_a_sample_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="sample 1 has 11 tokens, more than a row"):
        pack(samples_of([2, 11]), 10)


def test_packing_off_keeps_one_sample_per_row():
    rows = one_per_row(samples_of([3, 2]))
    assert [r.seq_lens for r in rows] == [[3], [2]]
