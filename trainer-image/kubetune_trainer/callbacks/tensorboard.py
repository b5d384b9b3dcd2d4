"""`tensorboard`: TensorBoard event files under OUTPUT/tensorboard/, so that
`tensorboard --logdir OUTPUT/tensorboard` shows the run (s3:// or a local folder).

The main rank appends scalars to a local event file in the job's scratch (a buffered write of
a few dozen bytes a step) and uploads the folder at each checkpoint, evaluation and at the end:
never per step, so the output is as fresh as the last checkpoint. Each start of the job adds its
own event file; TensorBoard reads them as one run and, where a resumed run redoes steps, keeps
the later values.
"""

import logging
import time

from pydantic import Field, field_validator

from kubetune.storage import StorageError, join_uri
from kubetune_trainer.callbacks import (
    CALLBACKS,
    CallbackPart,
    CheckpointEvent,
    Control,
    EndEvent,
    EvalEvent,
    StepEvent,
)
from kubetune_trainer.registry import Options, PartError

log = logging.getLogger(__name__)


class TensorBoardOptions(Options):
    folder: str = Field(
        "tensorboard",
        description="Folder under the output URI for the event files: point `tensorboard "
        "--logdir` at OUTPUT/<folder>.",
    )

    @field_validator("folder")
    @classmethod
    def _relative(cls, folder: str) -> str:
        parts = folder.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError("must be a relative folder without '.' or '..' parts")
        return "/".join(parts)


class TensorBoard:
    def __init__(self, options: TensorBoardOptions, recipe):
        self.local = recipe.scratch / "tensorboard"
        self.uri = join_uri(recipe.config.output.uri, options.folder)
        self.events = None  # the event file, opened at the first scalar
        self.warned = False
        if recipe.runtime.is_main:
            # The event file itself, not tensorboardX's SummaryWriter: that one hands events to
            # a thread through a queue its flush() does not drain, so an upload could miss some.
            try:
                from tensorboardX.event_file_writer import EventsWriter
                from tensorboardX.proto.event_pb2 import Event
                from tensorboardX.proto.summary_pb2 import Summary
            except ImportError:
                raise PartError(
                    "callback 'tensorboard' needs tensorboardX in the trainer image: "
                    "pip install 'kubetune[trainer]'"
                ) from None
            self._classes = EventsWriter, Event, Summary

    def on_step(self, recipe, event: StepEvent, control: Control) -> None:
        if not recipe.runtime.is_main:
            return
        scalars = {"train/loss": event.loss, "train/learning_rate": event.learning_rate}
        if event.seconds > 0:
            scalars["train/tokens_per_second"] = event.tokens / event.seconds
        self._write(scalars, event.step)

    def on_eval(self, recipe, event: EvalEvent, control: Control) -> None:
        if not recipe.runtime.is_main:
            return
        scalars = {"eval/loss": event.eval_loss, "eval/perplexity": event.eval_perplexity}
        self._write(scalars, event.step)
        self._upload(recipe)

    def on_checkpoint(self, recipe, event: CheckpointEvent) -> None:
        if recipe.runtime.is_main and self.events is not None:
            self._upload(recipe)

    def on_end(self, recipe, event: EndEvent) -> None:
        if recipe.runtime.is_main and self.events is not None:
            self._upload(recipe)
            self.events.close()
            self.events = None

    def _write(self, scalars: dict[str, float], step: int) -> None:
        EventsWriter, Event, Summary = self._classes
        if self.events is None:
            self.local.mkdir(parents=True, exist_ok=True)
            # TensorBoard reads a folder's files in name order; tensorboardX names them by the
            # second and the host, and this suffix keeps two starts within a second in order.
            self.events = EventsWriter(str(self.local / "events"), f".{time.time_ns()}")
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self.events.write_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        )

    def _upload(self, recipe) -> None:
        """The local event files to the output; a failure is logged, training goes on."""
        self.events.flush()
        try:
            recipe.output.upload_dir(self.local, self.uri)
        except (StorageError, OSError) as err:
            if not self.warned:
                log.warning("tensorboard: event files not uploaded to %s: %s", self.uri, err)
            self.warned = True


PART = CALLBACKS.add(
    CallbackPart(
        name="tensorboard",
        options=TensorBoardOptions,
        build=TensorBoard,
        description="TensorBoard event files under OUTPUT/tensorboard/: train loss, learning "
        "rate and tokens/s per step, eval loss and perplexity per epoch",
    )
)
