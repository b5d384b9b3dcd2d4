"""`fsdp2`: FSDP2 `fully_shard` on each decoder layer, then on the rest, over all ranks.

LoRA weights stay fp32 (peft upcasts them); where the base model was loaded in bf16 (the
precision hyperparameter), the compute is bf16 and gradients are reduced in fp32.
FSDP2 reduce-scatters per layer in each backward, so it has no no_sync.
"""

import logging
from contextlib import nullcontext

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from kubetune_trainer.registry import NoOptions, PartError
from kubetune_trainer.strategies import STRATEGIES, Strategy

log = logging.getLogger(__name__)


def wrap(model, hp, runtime, options):
    if hp.int8_quantization:
        raise PartError(
            "spec.trainer.strategy: fsdp2 cannot shard int8 weights; set int8_quantization: "
            "false or choose ddp"
        )
    if runtime.world_size == 1:
        return model
    policy = MixedPrecisionPolicy()
    if any(p.dtype == torch.bfloat16 for p in model.parameters()):  # one dtype per shard group
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layer_types = set(getattr(model.get_base_model(), "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_types]
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)  # the rest: embeddings, final norm, head
    log.info(
        "FSDP: %d %s layers sharded over %d ranks",
        len(layers),
        "/".join(sorted(layer_types)),
        runtime.world_size,
    )
    return model


STRATEGIES.add(
    Strategy(
        name="fsdp2",
        options=NoOptions,
        wrap=wrap,
        no_sync=lambda model, last: nullcontext(),
        unwrap=lambda model: model,
        shards_weights=True,
        description="Shards each decoder layer over the ranks; chosen by enable_fsdp.",
    )
)
