"""Hyperparameters: the job's over the hub model's defaults over the JumpStart defaults. The
combination is checked again: each layer may be valid alone and not together."""

from pydantic import ValidationError

from kubetune.api.v1alpha1 import HyperparameterOverrides, Hyperparameters
from kubetune.resolve.errors import ResolveError


def resolve_hyperparameters(layers: list[HyperparameterOverrides | None]) -> Hyperparameters:
    """`layers` nearest first: the job's, then each hub entry's defaults."""
    chosen: dict = {}
    for layer in reversed([h for h in layers if h is not None]):
        chosen.update(layer.model_dump(exclude_none=True))
    try:
        return Hyperparameters.model_validate(chosen)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'hyperparameters'}: {e['msg']}" for e in err.errors()
        )
        raise ResolveError(
            "InvalidHyperparameters",
            f"the job's hyperparameters with the hub model's defaults are invalid: {problems}",
        ) from None
