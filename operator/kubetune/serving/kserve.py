"""A KServe InferenceService for KServe's Hugging Face runtime (vLLM on GPU): merged weights by
storageUri, or base model and adapter by storageUris with vLLM's LoRA flags. KServe's storage
initializer downloads them with the S3 Secret that a ServiceAccount lists, as KServe documents."""

from kubetune.serving import common
from kubetune.serving.artifacts import Serving

API_VERSION = "serving.kserve.io/v1beta1"
MODEL_FORMAT = "huggingface"  # served by KServe's kserve-huggingfaceserver runtime
# KServe's default download location; multiple storageUris must share a parent folder.
MOUNT = "/mnt/models"


def service_account_name(serving: Serving) -> str:
    return f"{serving.name}-storage"


def render(serving: Serving) -> list[dict]:
    """The ServiceAccount (only with a Secret) and the InferenceService."""
    predictor: dict = {}
    objects = []
    if serving.secret:
        objects.append(render_service_account(serving))
        predictor["serviceAccountName"] = service_account_name(serving)
    model: dict = {"modelFormat": {"name": MODEL_FORMAT}}
    args = []
    if serving.weights == "merged":
        model["storageUri"] = serving.artifacts
    else:
        predictor["storageUris"] = [
            {"uri": serving.base, "mountPath": f"{MOUNT}/base"},
            {"uri": serving.artifacts, "mountPath": f"{MOUNT}/adapter"},
        ]
        # The runtime names the model after the InferenceService (--model_name={{.Name}});
        # the later flag wins, so that name is free for the adapter, which clients ask for.
        args += [
            f"--model_name={serving.base_name}",
            f"--model_dir={MOUNT}/base",
            "--enable-lora",
            "--lora-modules",
            f"{serving.name}={MOUNT}/adapter",
            f"--max-lora-rank={serving.max_lora_rank}",
        ]
    if serving.resources.gpus > 1:
        args.append(f"--tensor-parallel-size={serving.resources.gpus}")
    if serving.max_model_len:
        args.append(f"--max_model_len={serving.max_model_len}")
    if args:
        model["args"] = args
    model["resources"] = common.resources(serving)
    predictor["model"] = model
    objects.append(
        {
            "apiVersion": API_VERSION,
            "kind": "InferenceService",
            "metadata": common.metadata(serving),
            "spec": {"predictor": predictor},
        }
    )
    return objects


def render_service_account(serving: Serving) -> dict:
    """KServe's storage initializer takes S3 credentials from the Secrets its pod's
    ServiceAccount lists (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; the endpoint from the
    Secret's serving.kserve.io/s3-endpoint annotation)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": common.metadata(serving, service_account_name(serving)),
        "automountServiceAccountToken": False,
        "secrets": [{"name": serving.secret}],
    }
