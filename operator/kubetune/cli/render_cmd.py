"""`kubetune render JOB.yaml --hub HUB.yaml`: the ConfigMap and training job (TrainJob or
PyTorchJob) the operator would create for a FineTuneJob, from the operator's own resolve and
render code, as YAML; for a presigned hub also the model URLs' Secret, with a placeholder for
what the operator signs at run time."""

import argparse
import sys
from pathlib import Path

import yaml

from kubetune.cli.validate import cluster_problems
from kubetune.config import ConfigError, load_config
from kubetune.local import files
from kubetune.local.files import LocalError
from kubetune.render.backends import BY_SETTING
from kubetune.render.configmap import render_configmap
from kubetune.render.model_access import presigned, render_model_urls_secret


def register(commands) -> None:
    cmd = commands.add_parser(
        "render",
        help="print the ConfigMap and training job the operator would create for a job",
        description="Resolve a FineTuneJob against the given ModelHubs (sharing, EULA, "
        "defaults, instance profiles) with the operator's code and print the ConfigMap and "
        "TrainJob or PyTorchJob it would create, as multi-document YAML (for a hub with "
        "storage.access presigned also the Secret of model URLs, its value a placeholder: the "
        "operator signs them at run time). Hub readiness (the "
        "operator's check that a model's source exists) is not checked. Exit 2 with one line "
        "per problem.",
    )
    cmd.add_argument("job", type=Path, metavar="JOB.yaml", help="the FineTuneJob (and ModelHubs)")
    add_resolution_arguments(cmd)
    cmd.add_argument(
        "--config",
        type=Path,
        metavar="OPERATOR_CONFIG",
        help="the operator's config file, or the chart's ConfigMap (helm template ... "
        "--show-only templates/configmap.yaml); default: built-in defaults",
    )
    cmd.add_argument(
        "--backend",
        choices=sorted(BY_SETTING),
        help="the training job kind: trainjob (Kubeflow Trainer v2) or pytorchjob (Training "
        "Operator v1); default: the config's trainingBackend, pytorchjob where that is auto "
        "(render cannot ask a cluster what it serves)",
    )
    cmd.add_argument(
        "--uid",
        help="the FineTuneJob's uid for owner references (default: derived from namespace/name, "
        "as local mode derives it)",
    )
    cmd.set_defaults(run=run)


def add_resolution_arguments(cmd: argparse.ArgumentParser) -> None:
    """What `render` and `run --local` share: where hubs come from, and namespace labels."""
    cmd.add_argument(
        "--hub",
        type=Path,
        action="append",
        default=[],
        metavar="HUB.yaml",
        help="a file of ModelHubs the job may name (repeat for more files)",
    )
    cmd.add_argument(
        "--namespace-label",
        type=label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the job's namespace, for hubs shared by namespaceSelector (repeatable)",
    )


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def run(args) -> int:
    try:
        config = load_config(args.config)
        manifests = files.read(args.job, args.hub)
        plan = files.resolve(manifests, config, args.uid, dict(args.namespace_label))
    except (LocalError, ConfigError) as err:
        return fail(*getattr(err, "lines", [str(err)]))
    owner = {"name": plan.job.metadata.name, "uid": plan.trainer_config.job.uid}
    for where, body in manifests.bodies:
        for problem in cluster_problems(body):
            print(f"kubetune: warning: {where}: {problem}", file=sys.stderr)
    setting = args.backend or config.training_backend
    backend = BY_SETTING.get(setting, BY_SETTING["pytorchjob"])
    children = [render_configmap(plan, owner), backend.render(plan, config, owner)]
    if presigned(plan):  # its name and key; the URLs are signed by the operator at run time
        children.insert(1, render_model_urls_secret(plan, owner, None))
    for problem in backend.unsupported(plan):
        print(f"kubetune: warning: {backend.kind}: {problem}", file=sys.stderr)
    sys.stdout.write(dump(children))
    return 0


def fail(*lines: str) -> int:
    for line in lines:
        print(f"kubetune: error: {line}", file=sys.stderr)
    return 2


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people and kubectl: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(documents: list[dict]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)
