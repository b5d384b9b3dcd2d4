"""`kubetune serving OUTPUT_URI --runtime kserve|vllm`: the objects that serve a finished job's
model from S3 (a KServe InferenceService, or a vLLM Deployment and Service), as YAML for
`kubectl apply -f -`; read from the job's MANIFEST.json and config.json."""

import argparse
import os
import re
import sys

from kubetune.api.v1alpha1.common import QUANTITY
from kubetune.cli.render_cmd import dump, fail
from kubetune.local import files, summary
from kubetune.local.files import LocalError
from kubetune.serving import artifacts, kserve, vllm
from kubetune.serving.artifacts import WEIGHTS, Resources

RUNTIMES = ("kserve", "vllm")


def register(commands) -> None:
    cmd = commands.add_parser(
        "serving",
        help="print the objects that serve a finished job's model (KServe or vLLM)",
        description="Print, as multi-document YAML for kubectl apply, the objects that serve a "
        "finished job's model from S3: with --runtime kserve a KServe InferenceService (Hugging "
        "Face runtime, vLLM on GPU) and, with --secret, the ServiceAccount that hands KServe "
        "the Secret; with --runtime vllm a vLLM Deployment (the weights copied from S3 by an "
        "init container) and a ClusterIP Service. Clients ask for the model by --name, on "
        "the OpenAI API. Read from MANIFEST.json and config.json under OUTPUT_URI (s3:// with "
        "the AWS_* variables; a file:// folder must first be copied to S3). Exit 1 when the "
        "job has not finished there, 2 on other problems. See docs/serving.md.",
    )
    cmd.add_argument("output", metavar="OUTPUT_URI", help="the finished job's output URI")
    cmd.add_argument("--runtime", required=True, choices=RUNTIMES, help="what serves it")
    cmd.add_argument(
        "--weights",
        choices=WEIGHTS,
        help="merged: the merged/ model; adapter: the job's base model with adapter/ loaded "
        "by vLLM's LoRA support (default: merged when the job exported it)",
    )
    cmd.add_argument(
        "--name", help="of the objects, and the model name clients ask for (default: the job's)"
    )
    cmd.add_argument("--namespace", help="of the objects (default: the job's)")
    cmd.add_argument(
        "--secret",
        metavar="NAME",
        help="the Secret with the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_ENDPOINT_URL ... as kubetune's Secrets have them), referenced by name; without "
        "it the pods use the cluster's own AWS credentials (IRSA, node role)",
    )
    cmd.add_argument(
        "--base-uri",
        metavar="S3_URI",
        help="--weights adapter: where the base model is, when the job's model.source is "
        "not s3:// (local mode) or the cluster reads a copy",
    )
    cmd.add_argument("--gpus", type=positive, default=1, help="nvidia.com/gpu (default 1)")
    cmd.add_argument("--cpu", type=quantity, default="4", help="CPU (default 4)")
    cmd.add_argument("--memory", type=quantity, default="32Gi", help="memory (default 32Gi)")
    cmd.add_argument("--max-model-len", type=positive, help="context length (default: the model's)")
    cmd.add_argument(
        "--image",
        help=f"--runtime vllm: the vLLM image (default {vllm.VLLM_IMAGE})",
    )
    cmd.set_defaults(run=run)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return int(text)


def quantity(text: str) -> str:
    if not re.fullmatch(QUANTITY, text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a quantity such as 8 or 32Gi")
    return text


def run(args) -> int:
    if args.runtime == "kserve" and args.image:
        return fail("--image: only for --runtime vllm (KServe's runtime brings its own image)")
    try:
        job = artifacts.read_finished(files.output_uri(args.output, "OUTPUT_URI"))
        serving = artifacts.plan(
            job,
            weights=args.weights,
            name=args.name,
            namespace=args.namespace,
            base_uri=args.base_uri,
            secret=args.secret,
            resources=Resources(gpus=args.gpus, cpu=args.cpu, memory=args.memory),
            max_model_len=args.max_model_len,
        )
    except summary.NotFinished as err:
        fail(*err.lines)
        return 1
    except LocalError as err:
        return fail(*err.lines)
    if args.runtime == "kserve" and args.secret and os.environ.get("AWS_ENDPOINT_URL"):
        print(
            f"kubetune: note: KServe reads a non-AWS S3 endpoint from the Secret's annotation, "
            f"not from AWS_ENDPOINT_URL: kubectl annotate secret {args.secret} "
            "serving.kserve.io/s3-endpoint=URL (docs/serving.md)",
            file=sys.stderr,
        )
    if args.runtime == "kserve":
        objects = kserve.render(serving)
    else:
        objects = vllm.render(serving, args.image or vllm.VLLM_IMAGE)
    sys.stdout.write(dump(objects))
    return 0
