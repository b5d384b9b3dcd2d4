"""The data entry point train.py calls today: the JumpStart choice between the
`domain-adaptation` and `instruction` formats by `instruction_tuned`. The recipe picks any
format by name from `kubetune_trainer.formats.FORMATS` instead."""

from pathlib import Path

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.encoder import effective_max_length
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits

__all__ = ["DataError", "IGNORE_INDEX", "Sample", "Splits", "effective_max_length", "load_splits"]


def load_splits(
    train_dir: Path, validation_dir: Path | None, hp: Hyperparameters, tokenizer
) -> Splits:
    """Read, tokenize and split the data; max_train/val_samples cap what each split keeps."""
    name = "instruction" if hp.instruction_tuned else "domain-adaptation"
    chosen = FORMATS.choose(name, None, "hyperparameters.instruction_tuned")
    channels = Channels(Path(train_dir), Path(validation_dir) if validation_dir else None)
    return chosen.part.load(channels, hp, tokenizer, chosen.options)
