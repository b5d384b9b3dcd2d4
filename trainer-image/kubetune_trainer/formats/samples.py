"""What every data format yields: tokenized samples in causal layout, split into train and
validation, and the error a data problem raises."""

from dataclasses import dataclass
from typing import NamedTuple

from kubetune.api.v1alpha1 import PromptFormat

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss skips these labels


class DataError(ValueError):
    """A problem with training, validation or test data; the message names the file and the
    reason."""


class Sample(NamedTuple):
    """One training sequence; `labels` is as long as `input_ids`, IGNORE_INDEX where no loss.

    A tuple, so `input_ids, labels = sample` works where (input_ids, labels) pairs are expected.
    """

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Splits:
    """Tokenized train and validation samples, in file order (a split only selects), and the
    test channel's samples. `test` is None without a test channel, or from a format that does
    not read one: the trainer refuses a job with a test channel then (inputs.load_data)."""

    train: list[Sample]
    validation: list[Sample]
    max_length: int  # no sample is longer (domain adaptation: every block is this long)
    test: list[Sample] | None = None
    # How the records became text, for `kubetune generate` (prompt.json); None: not known.
    prompt: PromptFormat | None = None
