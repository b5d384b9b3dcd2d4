"""`mlflow`: the run in an MLflow tracking server: the hyperparameters as params, train loss,
learning rate and tokens/s per step, eval loss and perplexity per epoch, the final metrics, and
the job's identity as tags. Only the main rank talks to the server.

Training never waits for the server: the loop only appends metrics to a list, and one thread of
ours sends them with `log_batch` every `flushSeconds`, after each evaluation and at the end.
A server that cannot be reached is logged once as a warning; its metrics are kept for the next
try (up to MAX_PENDING), and training goes on. A restarted pod continues the run that carries
the job's uid tag instead of starting a second one.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable

from pydantic import Field

from kubetune_trainer.callbacks import (
    CALLBACKS,
    CallbackPart,
    Control,
    EndEvent,
    EvalEvent,
    StepEvent,
)
from kubetune_trainer.callbacks.records import as_dict, job_title
from kubetune_trainer.registry import Options, PartError

log = logging.getLogger(__name__)

UID_TAG = "kubetune.job.uid"
MAX_PENDING = 100_000  # metrics held while the server is away: 3 a step, 33,000 steps


class MlflowOptions(Options):
    tracking_uri: str = Field(
        min_length=1,
        description="The MLflow tracking server (http://mlflow.mlflow:5000), or any URI MLflow "
        "takes. Credentials come from MLflow's own variables (MLFLOW_TRACKING_TOKEN, ...).",
    )
    experiment: str | None = Field(
        None, min_length=1, description="Experiment of the run; unset: <namespace>/<job name>."
    )
    run_name: str | None = Field(None, min_length=1, description="Unset: the job name.")
    flush_seconds: float = Field(
        30, gt=0, description="Longest time, in seconds, step metrics wait before they are sent."
    )
    end_timeout_seconds: float = Field(
        60,
        ge=0,
        description="How long the end of training waits for the last metrics to reach the "
        "server before it goes on without them.",
    )


class Mlflow:
    def __init__(self, options: MlflowOptions, recipe):
        self.options = options
        self.main = recipe.runtime.is_main
        if not self.main:
            return
        try:
            from mlflow.entities import Metric, Param, RunStatus
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise PartError(
                "callback 'mlflow' needs the MLflow client in the trainer image: "
                "pip install 'kubetune[mlflow]'"
            ) from None
        self.Metric, self.Param = Metric, Param
        self.finished = RunStatus.to_string(RunStatus.FINISHED)
        self.client = MlflowClient(options.tracking_uri)
        job = recipe.config.job
        self.experiment = options.experiment or job_title(recipe.config)
        self.run_name = options.run_name or job.name
        self.uid = job.uid
        self.tags = {
            UID_TAG: job.uid,
            "kubetune.job.name": job.name,
            "kubetune.job.namespace": job.namespace,
            "kubetune.model": recipe.config.model.model_id,
            "kubetune.output": recipe.config.output.uri,
        }
        self.params = {k: str(v) for k, v in recipe.hp.model_dump().items()}
        self.run_id: str | None = None
        self.pending: list = []  # Metric entities not sent yet
        self.lock = threading.Lock()
        self.failing = False
        self.last_flush = time.monotonic()
        self.last_step = 0
        self.tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        # A daemon thread: a server that hangs cannot keep the trainer from exiting.
        self.thread = threading.Thread(target=self._work, name="kubetune-mlflow", daemon=True)
        self.thread.start()
        self.tasks.put(self._run)  # the run shows up with its params as training starts

    # --- the loop's side: append, never wait ---------------------------------------------

    def on_step(self, recipe, event: StepEvent, control: Control) -> None:
        if not self.main:
            return
        metrics = {"train/loss": event.loss, "train/learning_rate": event.learning_rate}
        if event.seconds > 0:
            metrics["train/tokens_per_second"] = event.tokens / event.seconds
        self._add(metrics, event.step)
        if time.monotonic() - self.last_flush >= self.options.flush_seconds:
            self._flush()

    def on_eval(self, recipe, event: EvalEvent, control: Control) -> None:
        if not self.main:
            return
        metrics = {
            "eval/loss": event.eval_loss,
            "eval/perplexity": event.eval_perplexity,
            "train/epoch_loss": event.train_loss,
            "epoch": event.epoch,
        }
        self._add(metrics, event.step)
        self._flush()

    def on_end(self, recipe, event: EndEvent) -> None:
        if not self.main:
            return
        final = {
            f"final/{name}": value
            for name, value in as_dict(event.metrics).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        self._add(final, self.last_step)
        self._flush()
        self.tasks.put(self._terminate)
        if not self.stop(self.options.end_timeout_seconds):
            log.warning(
                "mlflow: %s did not take the last metrics within %g s; going on without them",
                self.options.tracking_uri,
                self.options.end_timeout_seconds,
            )

    def stop(self, timeout: float) -> bool:
        """Let the thread finish what it was handed, then end; False if it is still busy."""
        self.tasks.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        entities = [self.Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.last_step = max(self.last_step, step)
        with self.lock:
            self.pending.extend(entities)
            del self.pending[:-MAX_PENDING]  # the oldest go first while the server is away

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        self.tasks.put(self._send)

    # --- the thread's side: talk to the server --------------------------------------------

    def _work(self) -> None:
        while (task := self.tasks.get()) is not None:
            try:
                task()
            except Exception as err:  # the server's or the network's: never the training's
                self._failed(err)
            else:
                if self.failing:
                    log.info("mlflow: %s reached again", self.options.tracking_uri)
                self.failing = False

    def _send(self) -> None:
        run_id = self._run()
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self.client.log_batch(run_id, metrics=batch)
        except Exception:
            with self.lock:  # sent again next time, before anything newer
                self.pending[:0] = batch
                del self.pending[:-MAX_PENDING]
            raise

    def _terminate(self) -> None:
        self.client.set_terminated(self._run(), self.finished)

    def _run(self) -> str:
        """This job's run: the one tagged with its uid (a restarted pod continues it), else a
        new one. Params it lacks are logged (MLflow refuses to change one)."""
        if self.run_id is not None:
            return self.run_id
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = self._create_experiment()
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{UID_TAG}` = '{self.uid}'", max_results=1
        )
        if found:
            run, logged = found[0].info.run_id, found[0].data.params
            self.client.update_run(run, status="RUNNING")
            log.info("mlflow: continuing run %s in experiment %r", run, self.experiment)
        else:
            created = self.client.create_run(experiment_id, tags=self.tags, run_name=self.run_name)
            run, logged = created.info.run_id, {}
            log.info("mlflow: run %s in experiment %r", run, self.experiment)
        params = [self.Param(k, v) for k, v in self.params.items() if k not in logged]
        self.client.log_batch(run, params=params)
        self.run_id = run
        return run

    def _create_experiment(self) -> str:
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # another job created it first
            experiment = self.client.get_experiment_by_name(self.experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _failed(self, err: Exception) -> None:
        if not self.failing:
            log.warning(
                "mlflow: %s: %s: %s; training goes on, the metrics are sent on the next try",
                self.options.tracking_uri,
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
        self.failing = True


PART = CALLBACKS.add(
    CallbackPart(
        name="mlflow",
        options=MlflowOptions,
        build=Mlflow,
        description="An MLflow run: hyperparameters, train loss and learning rate per step, "
        "eval loss and perplexity per epoch, final metrics; continued after a restart",
    )
)
