"""Padding-free packing: several samples per row, each keeping its own positions.

A packed row concatenates samples; `position_ids` restart at 0 for each sample and
`seq_lens` tells the attention where samples end, so no sample attends to another and no
accelerator time goes to padding tokens.
"""

import bisect
from dataclasses import dataclass, field

from kubetune_trainer.formats.samples import IGNORE_INDEX


@dataclass
class Row:
    """One training row: concatenated samples, their positions and where each one ends."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)

    def add(self, input_ids: list[int], labels: list[int]) -> None:
        self.input_ids += input_ids
        # The loss shifts labels by one: a sample's first label would be predicted from the
        # previous sample's last token, across the boundary. Nothing predicts it.
        self.labels += [IGNORE_INDEX] + labels[1:]
        self.position_ids += range(len(input_ids))
        self.seq_lens.append(len(input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(samples: list[tuple[list[int], list[int]]], row_tokens: int) -> list[Row]:
    """Best-fit decreasing: rows of at most `row_tokens` tokens, in a deterministic order.

    Each sample, longest first, goes to the row with the least room that still fits it:
    O(n log n) with a sorted list of (room, row index). Samples longer than a row are the data
    module's job to cut; they are refused here.
    """
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i][0]), i))
    rows: list[Row] = []
    rooms: list[tuple[int, int]] = []  # (tokens still free, index into rows), ascending
    for i in order:
        input_ids, labels = samples[i]
        if len(input_ids) > row_tokens:
            raise ValueError(
                f"sample {i} has {len(input_ids)} tokens, more than a row ({row_tokens})"
            )
        slot = bisect.bisect_left(rooms, (len(input_ids), -1))
        if slot == len(rooms):
            rows.append(Row())
            room, index = row_tokens, len(rows) - 1
        else:
            room, index = rooms.pop(slot)
        rows[index].add(input_ids, labels)
        bisect.insort(rooms, (room - len(input_ids), index))
    return rows


def one_per_row(samples: list[tuple[list[int], list[int]]]) -> list[Row]:
    """Packing switched off: each sample is a row of its own (batches are padded later)."""
    rows = []
    for input_ids, labels in samples:
        row = Row()
        row.add(input_ids, labels)
        rows.append(row)
    return rows
