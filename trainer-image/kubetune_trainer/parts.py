"""The recipe's parts, chosen once from the TrainerConfig before anything is downloaded: an
unknown name or bad options fail here, in one line that names the field."""

from dataclasses import dataclass

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig
from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.formats import FORMATS, DataFormat
from kubetune_trainer.models import MODELS, ModelFamily
from kubetune_trainer.registry import Chosen, PartError
from kubetune_trainer.runtime import Runtime
from kubetune_trainer.strategies import Strategy
from kubetune_trainer.strategies import choose as choose_strategy

# Always on, first, in this order; a job's own callbacks run after them.
BUNDLED_CALLBACKS = ("stop-on-signal", "checkpointer", "progress", "log", "loss-curve")


@dataclass(frozen=True)
class Parts:
    data_format: Chosen[DataFormat]
    strategy: Chosen[Strategy]
    callbacks: list[Chosen[CallbackPart]]
    # None: chosen by models.choose once the model's config.json is downloaded.
    model: Chosen[ModelFamily] | None


def choose(config: TrainerConfig, hp: Hyperparameters, runtime: Runtime) -> Parts:
    chosen = config.trainer
    data_format = chosen.data_format
    if data_format is None:
        name, options = ("instruction" if hp.instruction_tuned else "domain-adaptation"), None
    else:
        name, options = data_format.name, data_format.options
        if name == "domain-adaptation" and hp.instruction_tuned:
            raise PartError(
                "spec.trainer.dataFormat.name: domain-adaptation contradicts "
                "hyperparameters.instruction_tuned: true; drop one of them"
            )
    callbacks = [CALLBACKS.choose(n, None, f"(bundled callback {n})") for n in BUNDLED_CALLBACKS]
    if hp.early_stopping_patience is not None:
        callbacks.append(CALLBACKS.choose("early-stopping", None, "hyperparameters"))
    for i, selection in enumerate(chosen.callbacks or []):
        callbacks.append(
            CALLBACKS.choose(selection.name, selection.options, f"spec.trainer.callbacks[{i}]")
        )
    strategy = chosen.strategy
    model = chosen.model
    return Parts(
        data_format=FORMATS.choose(name, options, "spec.trainer.dataFormat"),
        strategy=choose_strategy(
            strategy and strategy.name, strategy and strategy.options, hp, runtime
        ),
        callbacks=callbacks,
        model=MODELS.choose(model.name, model.options, "spec.trainer.model") if model else None,
    )
