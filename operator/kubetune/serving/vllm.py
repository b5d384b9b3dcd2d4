"""A plain vLLM Deployment and ClusterIP Service, for clusters without KServe: init containers
copy the weights from S3 into an emptyDir with the AWS CLI (credentials from the Secret, by
reference), then `vllm serve` loads them and answers the OpenAI API on port 8000."""

from kubetune.serving import common
from kubetune.serving.artifacts import Serving

# vLLM 0.15.1 is the engine of KServe 0.17's Hugging Face runtime: both runtimes behave alike.
VLLM_IMAGE = "vllm/vllm-openai:v0.15.1"
# AWS CLI v2 reads AWS_ENDPOINT_URL itself (since 2.13), so MinIO or Ceph need no extra flag.
AWS_CLI_IMAGE = "amazon/aws-cli:2.32.8"
PORT = 8000
MODELS = "/models"  # the emptyDir with the downloaded weights
CACHE = "/cache"  # HOME of the non-root user: vLLM's, torch's and the AWS CLI's caches
USER = 1000  # neither image needs root; any UID works with HOME on the cache volume
HOME = {"name": "HOME", "value": CACHE}  # the images' own HOME, /root, is not writable for USER
SHM_SIZE = "2Gi"  # vLLM's workers exchange tensors through /dev/shm (tensor parallel)


def render(serving: Serving, image: str = VLLM_IMAGE) -> list[dict]:
    """The Deployment and its Service."""
    return [render_deployment(serving, image), render_service(serving)]


def render_deployment(serving: Serving, image: str = VLLM_IMAGE) -> dict:
    if serving.weights == "merged":
        fetches = [fetch("fetch-merged", serving.artifacts, f"{MODELS}/merged", serving)]
        args = [f"{MODELS}/merged", f"--served-model-name={serving.name}"]
    else:
        fetches = [
            fetch("fetch-base", serving.base, f"{MODELS}/base", serving),
            fetch("fetch-adapter", serving.artifacts, f"{MODELS}/adapter", serving),
        ]
        args = [
            f"{MODELS}/base",
            f"--served-model-name={serving.base_name}",
            "--enable-lora",
            "--lora-modules",
            f"{serving.name}={MODELS}/adapter",
            f"--max-lora-rank={serving.max_lora_rank}",
        ]
    args.append(f"--port={PORT}")
    if serving.resources.gpus > 1:
        args.append(f"--tensor-parallel-size={serving.resources.gpus}")
    if serving.max_model_len:
        args.append(f"--max-model-len={serving.max_model_len}")
    server = {
        "name": "vllm",
        "image": image,
        "command": ["vllm", "serve"],
        "args": args,
        "env": [
            HOME,
            {"name": "HF_HOME", "value": f"{CACHE}/huggingface"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # /health answers once the engine has loaded the weights: loading a large model and
        # capturing CUDA graphs may take many minutes, which the startup probe allows (30 min).
        "startupProbe": probe(period=10, failures=180),
        "readinessProbe": probe(period=5, failures=3),
        "livenessProbe": probe(period=10, failures=3),
        "resources": common.resources(serving),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS, "readOnly": True},
            {"name": "cache", "mountPath": CACHE},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(serving),
        "spec": {
            "replicas": 1,
            # A rolling update would need a second set of GPUs while the old pod still runs.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": common.selector(serving)},
            "template": {
                "metadata": {"labels": common.metadata(serving)["labels"]},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER,
                        "runAsGroup": USER,
                        "fsGroup": USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": fetches,
                    "containers": [server],
                    "volumes": [
                        {"name": "models", "emptyDir": {}},
                        {"name": "cache", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                    ],
                },
            },
        },
    }


def fetch(name: str, source: str, target: str, serving: Serving) -> dict:
    """An init container that copies one s3:// folder into the models volume."""
    container = {
        "name": name,
        "image": AWS_CLI_IMAGE,
        "command": ["aws"],
        "args": ["s3", "sync", "--only-show-errors", "--no-progress", source, target],
        "env": [HOME],
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS},
            {"name": "cache", "mountPath": CACHE},
        ],
    }
    if serving.secret:  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL ...
        container["envFrom"] = [{"secretRef": {"name": serving.secret}}]
    return container


def render_service(serving: Serving) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(serving),
        "spec": {
            "type": "ClusterIP",
            "selector": common.selector(serving),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def probe(period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def container_security() -> dict:
    """Pod Security Standard "restricted". The root filesystem stays writable: vLLM's
    compilers (torch inductor, Triton, FlashInfer) write caches where not all are configurable."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
