"""`kubetune-train --config PATH`: one fine-tuning run, read top to bottom.

load config -> choose the recipe's parts (parts.py) -> setup, fit, export (recipe.py) -> say
how it ended by the exit-code contract. One process, or one per accelerator under torchrun
(RANK, WORLD_SIZE... as PyTorchJob and TrainJob set).
"""

import argparse
import logging
import sys
from pathlib import Path

import torch
from pydantic import ValidationError

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig, TrainingMetrics
from kubetune.api.v1alpha1.exits import ExitCode
from kubetune.api.v1alpha1.trainer_config import DEFAULT_PATH
from kubetune.storage import NoSpace, StorageError
from kubetune_trainer.artifacts import OutputTaken, RetriesExhausted
from kubetune_trainer.formats import DataError
from kubetune_trainer.launch import record_exit
from kubetune_trainer.model import ModelError
from kubetune_trainer.parts import choose as choose_parts
from kubetune_trainer.preemption import Stopped
from kubetune_trainer.progress import record_outcome
from kubetune_trainer.recipe import export, fit, setup
from kubetune_trainer.registry import PartError
from kubetune_trainer.runtime import Runtime

log = logging.getLogger("kubetune.train")


class ConfigError(ValueError):
    """The TrainerConfig file is missing or invalid."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runtime = Runtime.from_env()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [rank {runtime.rank}] %(message)s",
    )
    for ours in ("kubetune", "kubetune_trainer"):  # DEBUG: a line per step; libraries stay at INFO
        logging.getLogger(ours).setLevel(runtime.log_level)
    code, message = run(args, runtime)
    record_exit(runtime.exit_dir, runtime.rank, code, message)
    return code


def run(args, runtime: Runtime) -> tuple[ExitCode | int, str]:
    """Train, and say how it ended by the exit-code contract (kubetune.api.v1alpha1.exits) and,
    when it will not be retried as it is, in progress.json (record_outcome)."""
    config = None
    try:
        config = read_config(args.config)
        train(config, runtime)
    except Stopped as stopped:
        log.warning("%s", stopped)
        record_outcome(config, runtime, "stopped", str(stopped), stopped.signum, stopped.step)
        return stopped.exit_code, str(stopped)
    except StorageError as err:
        log.error("%s", err)
        if err.transient:
            return ExitCode.INFRASTRUCTURE, str(err)
        record_outcome(config, runtime, "failed", str(err))
        return ExitCode.USER_ERROR, str(err)
    except (
        ConfigError,
        DataError,
        ModelError,
        NoSpace,
        OutputTaken,
        PartError,
        RetriesExhausted,
    ) as err:
        log.error("%s", err)  # the user's to fix: one line, no traceback
        record_outcome(config, runtime, "failed", str(err))
        code = ExitCode.RETRIES_EXHAUSTED if isinstance(err, RetriesExhausted) else None
        return code or ExitCode.USER_ERROR, str(err)
    except (torch.distributed.DistError, ConnectionError, TimeoutError) as err:
        log.exception("lost contact with the other ranks or a service; a new pod resumes")
        return ExitCode.INFRASTRUCTURE, f"{type(err).__name__}: {one_line(err)}"
    except Exception as err:
        log.exception("unexpected error in the trainer")
        message = f"unexpected {type(err).__name__}: {one_line(err)}"
        record_outcome(config, runtime, "failed", message)
        return ExitCode.TRAINER_ERROR, message
    return ExitCode.SUCCEEDED, ""


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:1000]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetune-train", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_PATH, help="TrainerConfig JSON file")
    return parser.parse_args(argv)


def read_config(path: str) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate_json(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the trainer config: {err.strerror}") from None
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{path}: not a valid TrainerConfig: {problems}") from None


def train(config: TrainerConfig, runtime: Runtime) -> TrainingMetrics:
    """One run of the recipe; its metrics."""
    hp = Hyperparameters.model_validate(config.hyperparameters.model_dump())
    parts = choose_parts(config, hp, runtime)  # a bad name or option fails before downloads
    with setup(config, runtime, parts) as recipe:
        if recipe.finished is not None:
            return recipe.finished
        fit(recipe)
        return export(recipe)


if __name__ == "__main__":  # the tokenization pool starts processes with spawn
    sys.exit(main())
