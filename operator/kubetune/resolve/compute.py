"""The compute a job gets: its own resources over the hub model's defaults over the operator's,
an instanceType expanded through the instance profiles."""

from dataclasses import dataclass, field

from kubetune.api.v1alpha1 import Resources
from kubetune.config import OperatorConfig
from kubetune.profiles import TAINTS, default_requests
from kubetune.resolve.errors import ResolveError

RESOURCE_NAMES = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
# Which fields say what kind of machine: a layer giving any of them replaces the whole group.
KIND_FIELDS = ("instance_type", "accelerator", "accelerators_per_node")
HUB_INSTANCE_TYPE = "the hub model's defaults.resources.instanceType"


@dataclass(frozen=True)
class Compute:
    accelerator: str  # nvidia, neuron or none
    accelerators: int  # of the accelerator resource per node (0 for none)
    processes_per_node: int  # torchrun --nproc_per_node
    nodes: int
    cpu: str | int  # requested and limited per pod (Guaranteed QoS with memory)
    memory: str | int
    instance_type: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)

    @property
    def resource_name(self) -> str | None:
        return RESOURCE_NAMES.get(self.accelerator)

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


def resolve_compute(layers: list[Resources | None], config: OperatorConfig) -> Compute:
    """`layers` nearest first: the job's resources, then each hub entry's default resources."""
    chosen: dict = {}
    field = "spec.resources.instanceType"  # where instance_type came from, for the message
    for depth, layer in reversed(list(enumerate(layers))):  # nearest applied last
        given = layer.model_dump(exclude_none=True) if layer is not None else {}
        if any(k in given for k in KIND_FIELDS):
            chosen = {k: v for k, v in chosen.items() if k not in KIND_FIELDS}
        chosen.update(given)
        if "instance_type" in given:
            field = "spec.resources.instanceType" if depth == 0 else HUB_INSTANCE_TYPE
    defaults = config.default_resources
    nodes = chosen.get("nodes", 1)
    if "instance_type" in chosen:
        name = chosen["instance_type"]
        profile = config.instance_profiles.get(name)
        if profile is None:
            known = ", ".join(sorted(config.instance_profiles))
            raise ResolveError(
                "UnknownInstanceType",
                f"{field}: {name} has no instance profile (known: {known}); use one of those, "
                "or accelerator/acceleratorsPerNode, or ask the platform team to add a profile",
            )
        cpu, memory = default_requests(profile.accelerator, profile.accelerators)
        return Compute(
            accelerator=profile.accelerator,
            accelerators=profile.accelerators,
            processes_per_node=profile.processes_per_node,
            nodes=nodes,
            cpu=chosen.get("cpu", profile.cpu or cpu),
            memory=chosen.get("memory", profile.memory or memory),
            instance_type=name,
            node_selector=dict(profile.node_selector),
            tolerations=with_taint_toleration(profile.tolerations, profile.accelerator),
        )
    accelerator = chosen.get("accelerator", defaults.accelerator)
    if accelerator == "none":
        count, processes = 0, 1
    elif "accelerator" in chosen:
        count = processes = chosen.get("accelerators_per_node", 1)
    else:
        count = processes = defaults.accelerators_per_node
    if accelerator == "neuron":
        processes = 2 * count  # two NeuronCores per Trainium device, one process each
    cpu, memory = default_requests(accelerator, count)
    return Compute(
        accelerator=accelerator,
        accelerators=count,
        processes_per_node=processes,
        nodes=nodes,
        cpu=chosen.get("cpu", defaults.cpu or cpu),
        memory=chosen.get("memory", defaults.memory or memory),
        tolerations=with_taint_toleration([], accelerator),
    )


def with_taint_toleration(tolerations: list[dict], accelerator: str) -> list[dict]:
    """The given tolerations plus the one for the taint GPU and Neuron nodes usually carry
    (docs/install-eks.md taints them), unless one for that key is there already."""
    taint = TAINTS.get(accelerator)
    if taint is None or any(t.get("key") == taint["key"] for t in tolerations):
        return list(tolerations)
    return [*tolerations, dict(taint)]
