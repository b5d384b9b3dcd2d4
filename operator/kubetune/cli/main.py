"""`kubetune` entry point: registers the subcommands and hands off to their modules."""

import argparse
import sys

from kubetune import __version__
from kubetune.cli import (
    crds_cmd,
    generate_cmd,
    operator_cmd,
    render_cmd,
    report,
    run_local,
    serving_cmd,
    validate,
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubetune",
        description="Kubernetes-native fine-tuning of foundation models.",
    )
    top.add_argument("--version", action="version", version=f"kubetune {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate.register(commands)
    crds_cmd.register(commands)
    operator_cmd.register(commands)
    run_local.register(commands)
    render_cmd.register(commands)
    report.register(commands)
    generate_cmd.register(commands)
    serving_cmd.register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kubetune crds | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
