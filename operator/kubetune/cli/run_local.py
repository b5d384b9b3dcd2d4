"""`kubetune run JOB.yaml --hub HUB.yaml --local`: the operator's validation, hub resolution
and TrainerConfig, then the trainer on this machine with a progress bar, and a summary.

Rerunning the same command resumes from the last checkpoint: the job's uid comes from its
namespace/name, so the trainer recognises its own output and checkpoints.
"""

import os
import signal
import sys
from pathlib import Path

from kubetune.api.v1alpha1 import ProgressReport
from kubetune.api.v1alpha1.exits import ExitCode
from kubetune.api.v1alpha1.trainer_config import DATA_CHANNELS
from kubetune.cli.render_cmd import add_resolution_arguments, fail
from kubetune.config import OperatorConfig
from kubetune.local import files, launch, summary
from kubetune.local.files import LocalError
from kubetune.local.progress import Watcher
from kubetune.storage import StorageError


def default_scratch() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "kubetune"


def register(commands) -> None:
    cmd = commands.add_parser(
        "run",
        help="run a FineTuneJob on this machine (--local)",
        description="Validate and resolve a FineTuneJob as the operator does (hub sharing, "
        "EULA, defaults), then train it on this machine: torchrun with one process per local "
        "GPU, or one process. URIs may be file:// or s3:// (credentials from the AWS_* "
        "variables). Ctrl-C saves a checkpoint; the same command again resumes. "
        "Exit 0 when trained, 2 for a problem to fix, 130 when stopped.",
    )
    cmd.add_argument("job", type=Path, metavar="JOB.yaml", help="the FineTuneJob (and ModelHubs)")
    add_resolution_arguments(cmd)
    cmd.add_argument("--local", action="store_true", help="train here (the only mode so far)")
    cmd.add_argument(
        "--output",
        metavar="URI",
        help="where the artifacts go, replacing spec.output: s3://, file:// or a folder "
        "(default: spec.output.uri, else ./kubetune-output/NAMESPACE/NAME/)",
    )
    cmd.add_argument(
        "--scratch",
        type=Path,
        metavar="DIR",
        help=f"copies of model and data, trainer config and log (default: {default_scratch()})",
    )
    cmd.add_argument("-v", "--verbose", action="store_true", help="show every trainer log line")
    cmd.set_defaults(run=run)


def run(args) -> int:
    if not args.local:
        return fail("only local runs so far: add --local, or kubectl apply -f the job")
    try:
        manifests = files.read(args.job, args.hub, args.output)
        config = OperatorConfig()
        if manifests.job.spec.output is None:  # the operator's default output, here
            default = {"uri": files.output_uri("kubetune-output")}
            config = OperatorConfig.model_validate({"defaultOutput": default})
        plan = files.resolve(manifests, config, labels=dict(args.namespace_label))
        check_local_sources(plan)
        gpus, trainer = launch.gpu_count(), launch.trainer_module()
    except LocalError as err:
        return fail(*err.lines)

    job = plan.job.metadata
    workdir = (args.scratch or default_scratch()).expanduser().resolve() / job.namespace / job.name
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, log_path = workdir / "config.json", workdir / "trainer.log"
    config_path.write_text(plan.trainer_config.model_dump_json(by_alias=True, indent=2))
    where = f"{gpus} GPUs" if gpus > 1 else "1 GPU" if gpus else "CPU"
    print(
        f"kubetune: training {job.namespace}/{job.name} ({plan.model.model_id}) on {where}; "
        f"output {plan.output_uri}; trainer log {log_path}",
        file=sys.stderr,
    )
    try:
        watcher = Watcher(plan.output_uri, log_path, plan.hyperparameters.epoch, args.verbose)
    except StorageError as err:
        return fail(str(err))
    finished_before = summary.finished_by(plan.output_uri, plan.trainer_config.job.uid)
    command = launch.trainer_command(trainer, config_path, gpus)
    try:
        outcome = launch.run(command, workdir, log_path, watcher.tick, torchrun=gpus > 1)
    finally:
        watcher.close()
    report = watcher.latest  # what this run wrote to progress.json: None if nothing yet

    if outcome.signals and outcome.code != 0:
        if report is not None and report.state == "stopped":
            said = f"stopped at step {report.step}; run the same command again to resume"
        elif report is None or report.state == "starting":
            said = "stopped before training began; run the same command again to start"
        else:  # asked twice: killed without a checkpoint
            said = "stopped; run the same command again to resume from the last checkpoint"
        print(f"kubetune: {said}", file=sys.stderr)
        return 128 + outcome.signals[0]
    if outcome.code != 0:
        said = launch.exit_message(workdir, outcome.code)
        return trainer_failed(outcome.code, report, log_path, said)
    if finished_before:
        print(
            f"kubetune: {plan.output_uri} holds this job's finished artifacts already; to train "
            "again, remove them or pass another --output",
            file=sys.stderr,
        )
    try:
        print("\n".join(summary.summary(summary.read_outputs(plan.output_uri))))
    except LocalError as err:
        return fail(*err.lines)
    return 0


def check_local_sources(plan) -> None:
    """file:// sources must exist here; saying so now spares the wait for the trainer."""
    model = plan.model
    uris = {
        f"model {model.model_id!r} (ModelHub {model.hub}): source": model.source,
    }
    data = plan.trainer_config.data
    uris.update({f"spec.data.{name}": getattr(data, name) for name in DATA_CHANNELS})
    for what, uri in uris.items():
        if uri and uri.startswith("file://") and not Path(uri.removeprefix("file://")).exists():
            raise LocalError(f"{what}: {uri}: no such file or folder on this machine")


def trainer_failed(
    code: int, report: ProgressReport | None, log_path: Path, recorded: str | None = None
) -> int:
    """A problem to fix (exit 2 or 3): the trainer's one line on it, from progress.json, else
    from its exit record (a problem found before the output was claimed). Else, or when it
    wrote neither (killed), the log's end."""
    said = report.message if report is not None and report.state == "failed" else recorded
    if said and code in (ExitCode.USER_ERROR, ExitCode.RETRIES_EXHAUSTED):
        return fail(said)
    log = log_path.read_text(errors="replace")
    print("\n".join(log.rstrip().splitlines()[-20:]), file=sys.stderr)
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"failed (exit {code})"
    how += f": {said}" if said else ""
    fail(f"the trainer {how}; its last lines are above, the whole log is in {log_path}")
    return 2 if code == ExitCode.USER_ERROR else 1
