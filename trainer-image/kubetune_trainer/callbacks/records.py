"""Training metrics as plain dicts, whatever their type: `EndEvent.metrics` may be a dict or a
pydantic model, and each of its epochs a dict, a model or a plain object with attributes."""

import dataclasses
from typing import Any


def as_dict(record: Any) -> dict[str, Any]:
    """The record's fields by their Python (snake_case) names."""
    if isinstance(record, dict):
        return record
    if hasattr(record, "model_dump"):
        return record.model_dump()
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    return dict(vars(record))


def epochs_of(metrics: Any) -> list[dict[str, Any]]:
    """The per-epoch metrics (epoch, train_loss, eval_loss, eval_perplexity) as dicts."""
    return [as_dict(epoch) for epoch in as_dict(metrics).get("epochs") or []]


def job_title(config: Any) -> str:
    """namespace/name of the job: how a figure, a run or a log line names it."""
    return f"{config.job.namespace}/{config.job.name}"
