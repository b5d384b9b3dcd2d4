"""`kubetune generate OUTPUT_URI --prompt ...`: answers of a finished job's tuned model, and of
its base model beside them, to prompts rendered the way the job's training data was."""

import argparse
import json
from pathlib import Path

from kubetune.api.v1alpha1.outputs import ADAPTER, MERGED
from kubetune.cli.render_cmd import fail
from kubetune.local import files, generation, prompts, summary
from kubetune.local.files import LocalError

SAMPLING = ("temperature", "top_p", "top_k")


def register(commands) -> None:
    cmd = commands.add_parser(
        "generate",
        help="answer prompts with a finished job's tuned model (and its base model)",
        description="Load the tuned model of a finished job from its output URI (s3:// with "
        "the AWS_* variables, file://, or a folder) and answer prompts rendered as the job's "
        "training records were (its template.json, its chat template, or plain text). "
        "--compare prints the base model's answer beside the tuned one. Exit 1 when the job "
        "has not finished there, 2 on other problems.",
    )
    cmd.add_argument("output", metavar="OUTPUT_URI", help="the job's output URI or folder")
    given = cmd.add_argument_group("prompts (at least one)")
    given.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                       help="a prompt: the instruction (the template's `instruction` field, "
                       "else its first), the user message of a chat job, or text to continue; "
                       "repeatable")  # fmt: skip
    given.add_argument("--prompts", type=Path, metavar="FILE",
                       help="a .jsonl file of records shaped like the training data (their "
                       "completion or last assistant turn shown as the reference), or a .txt "
                       "file of one prompt per line")  # fmt: skip
    given.add_argument("--field", action="append", default=[], type=field, metavar="NAME=VALUE",
                       help="another template field for --prompt, e.g. context=...")  # fmt: skip
    which = cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--compare",
        action="store_true",
        help="answer with the base model too, printed beside the tuned answer",
    )
    which.add_argument("--base", action="store_true", help="answer with the base model only")
    cmd.add_argument("--weights", choices=["adapter", "merged"],
                     help="the tuned model: the base model with adapter/ (default with "
                     "--compare, or when the job has no merged/), or merged/")  # fmt: skip
    cmd.add_argument(
        "--base-model",
        metavar="DIR|URI",
        help="the base model's folder (default: the job's model source)",
    )
    sampling = cmd.add_argument_group("generation (transformers' names)")
    sampling.add_argument(
        "--max-new-tokens",
        type=positive,
        default=128,
        metavar="N",
        help="new tokens per answer at most (default 128)",
    )
    sampling.add_argument(
        "--do-sample", action="store_true", help="sample instead of greedy decoding"
    )
    sampling.add_argument("--temperature", type=float, metavar="T", help="with --do-sample")
    sampling.add_argument("--top-p", type=float, metavar="P", help="with --do-sample")
    sampling.add_argument("--top-k", type=positive, metavar="K", help="with --do-sample")
    sampling.add_argument("--repetition-penalty", type=float, metavar="X")
    sampling.add_argument("--seed", type=int, default=0, help="for --do-sample (default 0)")
    cmd.add_argument(
        "--batch-size",
        type=positive,
        default=8,
        metavar="N",
        help="prompts answered together (default 8)",
    )
    cmd.add_argument("--cache", type=Path, default=generation.CACHE, metavar="DIR",
                     help="where s3:// artifacts and base models are downloaded, once "
                     f"(default {generation.CACHE})")  # fmt: skip
    cmd.add_argument("--device", help="torch device (default: cuda when there is one, else cpu)")
    cmd.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per prompt (prompt, reference, base, tuned)",
    )
    cmd.set_defaults(run=run)  # fmt: skip


def field(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def run(args) -> int:
    try:
        options = generation_options(args)
        job = generation.open_job(files.output_uri(args.output, "OUTPUT_URI"), args.cache)
        asked = [prompts.from_text(t, job.prompt, dict(args.field)) for t in args.prompt]
        if args.prompts:
            asked += prompts.from_file(args.prompts, job.prompt)
        if not asked:
            raise LocalError("no prompt: give --prompt TEXT or --prompts FILE")
        model = load(job, args)
        rows = answer_all(model, asked, options, args)
    except summary.NotFinished as err:
        fail(*err.lines)
        return 1
    except LocalError as err:
        return fail(*err.lines)
    for row in rows:
        print(json.dumps(row) if args.json else "\n".join(shown(row, len(rows))), flush=True)
    return 0


def generation_options(args) -> dict:
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for name in SAMPLING:
        value = getattr(args, name)
        if value is not None and not args.do_sample:
            raise LocalError(f"--{name.replace('_', '-')} takes effect only with --do-sample")
        if value is not None:
            options[name] = value
    if args.repetition_penalty is not None:
        options["repetition_penalty"] = args.repetition_penalty
    return options


def load(job, args) -> generation.Generator:
    """One model: merged/ alone where that suffices, else the base with the adapter."""
    both = args.compare or args.base
    weights = args.weights or ("merged" if job.has_merged and not both else "adapter")
    if weights == "merged":
        if not job.has_merged:
            raise LocalError(f"{job.uri}: the job exported no merged/ (merge_weights: false)")
        if both:
            raise LocalError("--weights merged gives no base answers; use --weights adapter")
        return generation.Generator(job, job.folder(MERGED), None, args.device)
    base = generation.base_folder(job, args.base_model, args.cache)
    return generation.Generator(job, base, job.folder(ADAPTER), args.device)


def answer_all(model, asked, options: dict, args) -> list[dict]:
    if args.do_sample:
        model.torch.manual_seed(args.seed)
    rows = []
    for start in range(0, len(asked), args.batch_size):
        batch = asked[start : start + args.batch_size]
        tuned = [None] * len(batch) if args.base else model.answers(batch, options)
        base = model.answers(batch, options, base=True) if args.base or args.compare else None
        for k, prompt in enumerate(batch):
            row = {"prompt": prompt.shown, "reference": prompt.reference}
            if base is not None:
                row["base"] = base[k]
            if tuned[k] is not None:
                row["tuned"] = tuned[k]
            rows.append(row)
    return rows


def shown(row: dict, total: int) -> list[str]:
    """A prompt and its answers, one labelled block each, for a terminal."""
    lines = [f"### {row['prompt']}"]
    for label in ("reference", "base", "tuned"):
        if row.get(label) is not None:
            text = row[label].replace("\n", "\n" + " " * 13)
            lines.append(f"  {label + ':':<11}{text}")
    return lines + [""] if total > 1 else lines
