"""`kubetune report OUTPUT_URI`: the metrics table of a finished job, read from its artifacts
(metrics.json, MANIFEST.json) on s3:// or file://, as `kubetune run --local` or a cluster left
them."""

from kubetune.cli.render_cmd import fail
from kubetune.local import files, summary
from kubetune.local.files import LocalError


def register(commands) -> None:
    cmd = commands.add_parser(
        "report",
        help="print the metrics of a finished job from its output URI",
        description="Print a finished job's per-epoch train loss, eval loss and perplexity "
        "(best epoch marked), throughput and artifact files, from metrics.json and "
        "MANIFEST.json under its output URI (s3:// with the AWS_* variables, file://, or a "
        "folder). Exit 1 when the job has not finished there, 2 on other problems.",
    )
    cmd.add_argument("output", metavar="OUTPUT_URI", help="the job's output URI or folder")
    cmd.set_defaults(run=run)


def run(args) -> int:
    try:
        outputs = summary.read_outputs(files.output_uri(args.output, "OUTPUT_URI"))
    except summary.NotFinished as err:
        fail(*err.lines)
        return 1
    except LocalError as err:
        return fail(*err.lines)
    print("\n".join(summary.report(outputs)))
    return 0
