"""Interim: the two JumpStart formats through data.load_splits until formats/ holds them."""

from kubetune_trainer.formats import FORMATS, DataFormat
from kubetune_trainer.registry import NoOptions


def _load(instruction: bool):
    def load(channels, hp, tokenizer, options):
        from kubetune_trainer.data import load_splits

        hp = hp.model_copy(update={"instruction_tuned": instruction})
        return load_splits(channels.train, channels.validation, hp, tokenizer)

    return load


FORMATS.add(DataFormat("domain-adaptation", NoOptions, _load(False)))
FORMATS.add(DataFormat("instruction", NoOptions, _load(True)))
