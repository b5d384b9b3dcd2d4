"""FineTuneJob and ModelHub manifests from YAML files, judged as `kubetune validate` judges
them, and resolved by the operator's resolver with the hubs those files define."""

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubetune.api.manifests import problems, prune_nulls, read_file
from kubetune.api.v1alpha1 import FineTuneJob, ModelHub
from kubetune.api.v1alpha1.common import PATTERN_RULES, STORAGE_URI
from kubetune.config import OperatorConfig
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.plan import Plan, plan

DEFAULT_NAMESPACE = "default"  # as kubectl apply without -n, in a fresh context


class LocalError(Exception):
    """What the user must fix: one line per problem, printed after `kubetune: error: `."""

    def __init__(self, *lines: str):
        super().__init__(*lines)
        self.lines = list(lines)


class FileHubs:
    """The `Hubs` the resolver reads, from ModelHub manifests instead of the API server.
    Namespaces carry only the labels given (`--namespace-label`), so sharing by selector
    can be tried out locally."""

    def __init__(self, hubs: list[ModelHub], labels: Mapping[str, Mapping[str, str]] = {}):
        self.hubs = {(h.metadata.namespace or DEFAULT_NAMESPACE, h.metadata.name): h for h in hubs}
        self.labels = labels
        self.missing: list[str] = []  # namespace/name of hubs looked up but not given

    def hub(self, namespace: str, name: str) -> ModelHub | None:
        found = self.hubs.get((namespace, name))
        if found is None:
            self.missing.append(f"{namespace}/{name}")
        return found

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return dict(self.labels.get(namespace, {}))  # every namespace exists, unlabelled


@dataclass
class Manifests:
    job: FineTuneJob
    hubs: list[ModelHub]
    bodies: list[tuple[str, dict]] = field(default_factory=list)  # (FILE: Kind/name, body)


def read(job_file: Path, hub_files: list[Path], output: str | None = None) -> Manifests:
    """The one FineTuneJob of job_file (which may hold ModelHubs too) and the ModelHubs of
    hub_files, namespaces defaulted; `output` replaces spec.output. Problems: LocalError."""
    lines, jobs, hubs, bodies = [], [], [], []
    for path, is_job_file in [(job_file, True)] + [(p, False) for p in hub_files]:
        for doc in read_file(Path(path)):
            found = problems(doc)
            lines += [f"{doc.source}: {doc.label}: {problem}" for problem in found]
            if found:
                continue
            body = prune_nulls(doc.body)
            body["metadata"].setdefault("namespace", DEFAULT_NAMESPACE)
            where = f"{doc.source}: {doc.label}"
            if body["kind"] == "ModelHub":
                hubs.append(ModelHub.model_validate(body))
            elif is_job_file:
                jobs.append((where, body))
            else:
                lines.append(f"{where}: --hub files hold ModelHubs; give the job as JOB.yaml")
            bodies.append((where, body))
    if lines:
        raise LocalError(*lines)
    if len(jobs) != 1:
        found = ", ".join(where for where, _ in jobs) or "none"
        raise LocalError(f"{job_file}: expected one FineTuneJob, found {len(jobs)} ({found})")
    keys = [(h.metadata.namespace, h.metadata.name) for h in hubs]
    twice = sorted({f"{ns}/{name}" for ns, name in keys if keys.count((ns, name)) > 1})
    if twice:
        names = ", ".join(twice)
        raise LocalError(f"ModelHub{'s' * (len(twice) > 1)} {names} defined more than once")
    body = jobs[0][1]
    if output is not None:
        body["spec"]["output"] = {"uri": output_uri(output)}
    return Manifests(FineTuneJob.model_validate(body), hubs, bodies)


def output_uri(given: str, what: str = "--output") -> str:
    """An output URI as given: s3:// or file://, or a local folder (made absolute)."""
    uri = given if "://" in given else Path(given).expanduser().resolve().as_uri()
    if not re.fullmatch(STORAGE_URI, uri):
        raise LocalError(f"{what} {given!r}: {PATTERN_RULES[STORAGE_URI]}, without spaces")
    return uri


def local_uid(job: FineTuneJob) -> str:
    """The same for every run of namespace/name: a rerun finds its checkpoints and output."""
    key = f"kubetune.io/local/{job.metadata.namespace or DEFAULT_NAMESPACE}/{job.metadata.name}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def resolve(
    manifests: Manifests,
    config: OperatorConfig,
    uid: str | None = None,
    labels: Mapping[str, str] = {},
) -> Plan:
    """The operator's Plan for the job; `labels` are the job namespace's. Hub readiness (the
    operator's check that the model source exists) is not asked for."""
    job = manifests.job
    hubs = FileHubs(manifests.hubs, {job.metadata.namespace or DEFAULT_NAMESPACE: labels})
    try:
        return plan(job, uid or local_uid(job), hubs, config, require_ready=False)
    except ResolveError as err:
        # A hub missing from the files (the operator says HubAccessDenied for one in another
        # namespace, so as not to tell which exist: here the user holds every file).
        if err.reason in ("HubNotFound", "HubAccessDenied") and hubs.missing:
            given = ", ".join(f"{ns}/{name}" for ns, name in sorted(hubs.hubs)) or "none"
            raise LocalError(
                f"HubNotFound: ModelHub {hubs.missing[-1]} is not among the hubs given "
                f"({given}): pass the YAML file that defines it with --hub HUB.yaml"
            ) from None
        raise LocalError(f"{err.reason}: {err.message}") from None
