"""Train/validation split and the max_*_samples caps, the same for every format: the
validation channel when given, else a seeded `validation_split_ratio` of train. The test
channel is neither split nor capped: it is scored whole."""

import logging
import math
import random
from pathlib import Path

from kubetune.api.v1alpha1 import Hyperparameters, PromptFormat
from kubetune_trainer.formats.samples import DataError, Sample, Splits

log = logging.getLogger(__name__)


def split_and_cap(train: list, val: list | None, hp: Hyperparameters, train_dir: Path) -> tuple:
    """(train, validation) items, capped; items are whatever the format counts (records,
    blocks), so a split may happen before tokenization."""
    if val is None:
        # Like datasets' train_test_split: ceil(n * ratio) held out, at least one each side.
        n = len(train)
        if n < 2:
            raise DataError(
                f"{train_dir}: {n} sample(s) cannot be split into train and validation "
                "(validation_split_ratio); add data or give a validation channel"
            )
        n_val = min(n - 1, math.ceil(n * hp.validation_split_ratio))
        order = list(range(n))
        random.Random(hp.train_data_split_seed).shuffle(order)
        # Each side keeps file order: the split only chooses which samples go where.
        val_idx = set(order[:n_val])
        train, val = (
            [s for i, s in enumerate(train) if i not in val_idx],
            [s for i, s in enumerate(train) if i in val_idx],
        )
    return cap(train, hp.max_train_samples), cap(val, hp.max_val_samples)


def cap(items: list, limit: int) -> list:
    return items if limit == -1 else items[:limit]


def splits(
    train: list[Sample],
    validation: list[Sample],
    max_length: int,
    test: list[Sample] | None = None,
    prompt: PromptFormat | None = None,
) -> Splits:
    """The result, logged. `test`: the test channel's samples, whole (no split, no cap)."""
    tested = f", {len(test)} test" if test is not None else ""
    log.info(
        "data: %d train, %d validation%s samples (<= %d tokens)",
        len(train), len(validation), tested, max_length,
    )  # fmt: skip
    return Splits(
        train=train, validation=validation, max_length=max_length, test=test, prompt=prompt
    )
