"""From packed rows to tensors: each rank's share of an epoch, micro-batches, padding.

Every rank computes the same rows and the same shuffled order, then takes every
world_size-th row; no rank sees another's rows and all ranks run the same number of steps.
"""

import random
from dataclasses import replace

import torch

from kubetune_trainer.formats.samples import IGNORE_INDEX
from kubetune_trainer.packing import Row


def blank(row: Row) -> Row:
    """The row with no labels: fills a rank's last batch without counting twice in the loss."""
    return replace(row, labels=[IGNORE_INDEX] * len(row.labels))


def rank_share(rows: list[Row], order: list[int], rank: int, world_size: int) -> list[Row]:
    """This rank's rows of `order`; padded with blank rows so every rank gets as many.

    Rank r takes order[r::world_size], so rank r's k-th batch of b rows and the other ranks'
    k-th batches together hold order[k*b*world_size : (k+1)*b*world_size], the same rows a
    single process with batch b*world_size would see.
    """
    share = [rows[i] for i in order[rank::world_size]]
    longest = -(-len(order) // world_size)  # ceil: the first ranks get one more
    if len(share) < longest:  # one short at most; may be empty with fewer rows than ranks
        share.append(blank(rows[order[0]]))
    return share


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The same shuffle on every rank and on every restart of the same epoch."""
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return order


def micro_batches(rows: list[Row], batch_size: int) -> list[list[Row]]:
    return [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]


def collate(rows: list[Row], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows padded to the longest; padding is a sequence of its own (positions from 0), so
    the packed-sequence masks keep real tokens from attending to it, and it has no labels."""
    width = max(len(r) for r in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        pad = width - len(row)
        ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE_INDEX] * pad)
        positions.append(row.position_ids + list(range(pad)))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {
        "input_ids": as_tensor(ids),
        "labels": as_tensor(labels),
        "position_ids": as_tensor(positions),
    }


def count_labels(rows: list[Row]) -> int:
    # The loss shifts labels by one, so a row's first label never counts.
    return sum(sum(label != IGNORE_INDEX for label in r.labels[1:]) for r in rows)
