"""Hyperparameters: the job's over the hub model's defaults over the JumpStart defaults. The
combination is checked again: each layer may be valid alone and not together."""

import json

from pydantic import ValidationError

from kubetune.api.v1alpha1 import HyperparameterOverrides, Hyperparameters
from kubetune.resolve.errors import ResolveError


def resolve_hyperparameters(layers: list[HyperparameterOverrides | None]) -> Hyperparameters:
    """`layers` nearest first: the job's, then each hub entry's defaults."""
    given = [h.model_dump(exclude_none=True) if h is not None else {} for h in layers]
    chosen: dict = {}
    for layer in reversed(given):
        chosen.update(layer)
    try:
        return Hyperparameters.model_validate(chosen)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        )
        own = given[0] if given else {}
        # What the user did not write and may not know about: the hub's part of the mix.
        inherited = ", ".join(
            f"{k}: {json.dumps(v)}" for k, v in sorted(chosen.items()) if k not in own
        )
        raise ResolveError(
            "InvalidHyperparameters",
            f"spec.hyperparameters with the hub model's defaults ({inherited or 'none'}) are "
            f"invalid: {problems}; set the conflicting ones in spec.hyperparameters",
        ) from None
