"""`progress`: progress.json for the operator and `kubetune run` (and Kubeflow Trainer's
progress endpoint where it gives one), from each step and evaluation."""

from kubetune_trainer.callbacks import CALLBACKS, CallbackPart
from kubetune_trainer.progress import ProgressReporter
from kubetune_trainer.registry import NoOptions
from kubetune_trainer.trainer_status import StatusPusher


class Progress:
    def __init__(self, reporter: ProgressReporter):
        self.reporter = reporter

    def on_step(self, recipe, event, control) -> None:
        self.reporter.step(
            event.epoch, event.step, event.loss, event.tokens, event.padded_tokens, event.seconds
        )

    def on_eval(self, recipe, event, control) -> None:
        self.reporter.epoch_done(event.epoch, event.step, event.eval_loss)


def build(options, recipe) -> Progress:
    runtime = recipe.runtime
    endpoint = runtime.trainer_status if runtime.is_main else None
    recipe.progress = ProgressReporter(
        recipe.output,
        recipe.config.output.uri,
        recipe.total_steps,
        recipe.state.step,
        enabled=runtime.is_main,
        pusher=StatusPusher(endpoint) if endpoint else None,
        epochs=recipe.hp.epoch,
        rows=len(recipe.rows),
        samples=recipe.samples,
        validation_samples=len(recipe.val_rows),
        world_size=runtime.world_size,
    )
    return Progress(recipe.progress)


CALLBACKS.add(
    CallbackPart(
        name="progress",
        options=NoOptions,
        build=build,
        description="progress.json and the Kubeflow Trainer progress endpoint (bundled).",
    )
)
