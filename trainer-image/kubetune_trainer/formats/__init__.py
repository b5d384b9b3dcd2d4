"""Data formats: how a channel's files become tokenized samples. Bundled: `domain-adaptation`,
`instruction` (jsonl + template.json) and `chat` (`messages` with roles); more come from
packages with a `kubetune.data_formats` entry point.

A format's `load(channels, hyperparameters, tokenizer, options) -> Splits` reads, validates,
tokenizes, splits and caps; every data problem is a `DataError` naming the file and the rule.
The test channel, when given, is read by the same rules but never split, capped or mixed
into train and validation.
Samples are in causal layout (labels = IGNORE_INDEX where no loss); a model family turns them
into its own rows (a seq2seq model feeds the leading no-loss part to its encoder).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits
from kubetune_trainer.registry import Registry

__all__ = ["FORMATS", "Channels", "DataError", "DataFormat", "IGNORE_INDEX", "Sample", "Splits"]


@dataclass(frozen=True)
class Channels:
    """The downloaded data: the train channel and, when given, the validation and test ones."""

    train: Path
    validation: Path | None = None
    test: Path | None = None


@dataclass(frozen=True)
class DataFormat:
    name: str
    options: type[BaseModel]
    load: Callable[[Channels, Hyperparameters, Any, BaseModel], Splits]
    description: str = ""


FORMATS = Registry[DataFormat]("data format", "kubetune.data_formats")

# The bundled formats register themselves; imported last, as they import the names above.
from kubetune_trainer.formats import chat, domain, instruction  # noqa: E402, F401
