"""Built-in instance profiles for common EKS GPU and Trainium instances.

Requests leave room for the kubelet, system daemons and the device plugins: about 90% of the
vCPUs and 85% of the memory, e.g. g5.12xlarge: 48 vCPU * 0.9 = 43, 192 GiB * 0.85 = 163Gi.
Neuron: `accelerators` counts Neuron devices (the aws.amazon.com/neuron resource); each trn1
device has 2 NeuronCores and torchrun starts one process per core.
"""

# name: (accelerator, accelerators, processes per node, vCPUs, memory GiB)
_INSTANCES = {
    # NVIDIA A10G
    "g5.xlarge": ("nvidia", 1, 1, 4, 16),
    "g5.2xlarge": ("nvidia", 1, 1, 8, 32),
    "g5.4xlarge": ("nvidia", 1, 1, 16, 64),
    "g5.8xlarge": ("nvidia", 1, 1, 32, 128),
    "g5.12xlarge": ("nvidia", 4, 4, 48, 192),
    "g5.16xlarge": ("nvidia", 1, 1, 64, 256),
    "g5.24xlarge": ("nvidia", 4, 4, 96, 384),
    "g5.48xlarge": ("nvidia", 8, 8, 192, 768),
    # NVIDIA L4
    "g6.xlarge": ("nvidia", 1, 1, 4, 16),
    "g6.2xlarge": ("nvidia", 1, 1, 8, 32),
    "g6.4xlarge": ("nvidia", 1, 1, 16, 64),
    "g6.8xlarge": ("nvidia", 1, 1, 32, 128),
    "g6.12xlarge": ("nvidia", 4, 4, 48, 192),
    "g6.24xlarge": ("nvidia", 4, 4, 96, 384),
    "g6.48xlarge": ("nvidia", 8, 8, 192, 768),
    # NVIDIA L40S
    "g6e.xlarge": ("nvidia", 1, 1, 4, 32),
    "g6e.12xlarge": ("nvidia", 4, 4, 48, 384),
    "g6e.48xlarge": ("nvidia", 8, 8, 192, 1536),
    # NVIDIA A100 / H100 / H200
    "p4d.24xlarge": ("nvidia", 8, 8, 96, 1152),
    "p4de.24xlarge": ("nvidia", 8, 8, 96, 1152),
    "p5.48xlarge": ("nvidia", 8, 8, 192, 2048),
    "p5e.48xlarge": ("nvidia", 8, 8, 192, 2048),
    # AWS Trainium: 1 device (2 cores) and 16 devices (32 cores)
    "trn1.2xlarge": ("neuron", 1, 2, 8, 32),
    "trn1.32xlarge": ("neuron", 16, 32, 128, 512),
    "trn1n.32xlarge": ("neuron", 16, 32, 128, 512),
}

TAINTS = {  # the taints EKS GPU and Neuron node groups usually carry
    "nvidia": {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    "neuron": {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"},
}


# Requests of a pod whose job, hub and operator config name no cpu/memory: per accelerator
# device (per pod for CPU jobs), sized to fit the smallest common node of the kind with room
# for system daemons: g5/g6.xlarge (1 GPU, 4 vCPU, 16 GiB), trn1.2xlarge (1 device, 8 vCPU,
# 32 GiB). A job on bigger nodes should say more, or use instanceType.
# kind: (vCPUs, memory GiB)
DEFAULT_REQUESTS = {"nvidia": (3, 12), "neuron": (6, 24), "none": (2, 8)}


def default_requests(accelerator: str, devices: int) -> tuple[str, str]:
    """(cpu, memory) requests for `devices` accelerators of a kind (CPU jobs: one pod)."""
    cpus, gib = DEFAULT_REQUESTS[accelerator]
    scale = max(devices, 1)
    return str(cpus * scale), f"{gib * scale}Gi"


def builtin_profiles() -> dict[str, dict]:
    """The profiles as OperatorConfig reads them (camelCase, like the chart's values)."""
    return {
        name: {
            "accelerator": accelerator,
            "accelerators": count,
            "processesPerNode": processes,
            "cpu": f"{int(vcpus * 0.9)}",
            "memory": f"{int(memory * 0.85)}Gi",
            "nodeSelector": {"node.kubernetes.io/instance-type": name},
            "tolerations": [TAINTS[accelerator]],
        }
        for name, (accelerator, count, processes, vcpus, memory) in _INSTANCES.items()
    }
