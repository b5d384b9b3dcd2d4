"""`kubetune operator`: run the operator (kubeconfig or in-cluster service account)."""

import argparse
import logging
import random
from pathlib import Path

from kubetune.cli.render_cmd import fail
from kubetune.config import ConfigError, load_config

PEERING = "kubetune"
# Loggers that write credentials at DEBUG: botocore logs every signed S3 request, headers and
# all (the access key id, the session token of a Secret). They stay at INFO or above.
CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer")


def register(commands) -> None:
    command = commands.add_parser(
        "operator",
        help="run the operator",
        description="Reconcile ModelHubs and FineTuneJobs into TrainJobs (Kubeflow Trainer v2) or "
        "PyTorchJobs (Training Operator v1), as the config's trainingBackend and the cluster's "
        "discovery decide at start-up. Uses the in-cluster "
        "service account, else the kubeconfig. Replicas peer through kopf (the kopf.dev CRDs and "
        "a peering object named kubetune, both from the Helm chart): one acts, the others stand "
        "by. Where the cluster has no kopf.dev CRDs, it warns and runs as the only replica. An "
        "invalid config, no kubeconfig, or an API server that does not answer: one error line, "
        "exit 2.",
    )
    scope = command.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NS", help="watch NS (repeatable)"
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    command.add_argument("--config", type=Path, help="operator config, or the chart's ConfigMap")
    command.add_argument("--metrics-port", type=port, default=8080, help="Prometheus /metrics")
    command.add_argument(
        "--health-port", type=port, default=8081, help="liveness/readiness at /healthz"
    )
    command.add_argument(
        "--standalone", action="store_true", help="no peering, no peering check: the only replica"
    )
    command.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    command.set_defaults(run=run)


def port(text: str) -> int:
    """1-65535. Not 0: kopf reads a liveness URL with port 0 as port 80, not "any free port"."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def run(args) -> int:
    # Imported here: kopf and the kubernetes client take a second to import, which every other
    # subcommand (and `kubetune --help`) would pay for, and only the [operator] extra has them.
    try:
        import kopf
        from kubernetes import client
        from kubernetes import config as kubeconfig
        from prometheus_client import start_http_server
    except ModuleNotFoundError as err:
        return fail(f"the operator needs {err.name}: pip install 'kubetune[operator]'")

    from kubetune.controller.cluster import Cluster
    from kubetune.controller.discovery import decide
    from kubetune.controller.handlers import build_registry
    from kubetune.controller.metrics import Metrics
    from kubetune.controller.preflight import peering_served, unreachable

    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        logging.error("%s", err)
        return 2
    try:
        kubeconfig.load_incluster_config()
    except kubeconfig.ConfigException:
        try:
            kubeconfig.load_kube_config()
        except (kubeconfig.ConfigException, OSError) as err:
            logging.error("no cluster to talk to: not in a pod, and the kubeconfig: %s", err)
            return 2
    api = client.ApiClient()
    problem = unreachable(api)
    if problem:
        logging.error("%s", problem)
        return 2
    standalone = args.standalone or not peering_served(api, PEERING, args.namespace or [])
    metrics = Metrics()
    start_http_server(args.metrics_port, registry=metrics.registry)
    backends = decide(config.training_backend, api)
    registry = build_registry(config, Cluster(api), metrics, backends)
    # A registry of our own has none of kopf's default login handlers: log in as the
    # kubernetes client just did (service account token, or the kubeconfig's credentials).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    namespaced = bool(args.namespace)
    kopf.run(
        registry=registry,
        namespaces=args.namespace or [],
        clusterwide=not namespaced,
        standalone=standalone,
        peering_name=None if standalone else PEERING,
        # kopf pauses every replica that shares the top priority: a random one per replica
        # lets exactly one act while the others stand by.
        priority=random.randint(1, 2**31 - 1),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


def configure_logging(level: str) -> None:
    """--log-level for the operator's own lines and kopf's; never credentials, even at DEBUG."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
