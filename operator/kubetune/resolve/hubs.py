"""The hub model a FineTuneJob names: found, shared with the job's namespace, references
followed across hubs (each hop shared with the referring hub's namespace), EULA and task checked.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kubetune.api.v1alpha1 import FineTuneJob, HubModel, ModelHub
from kubetune.api.v1alpha1.modelhub import Eula, LabelSelector, ModelDefaults
from kubetune.resolve.errors import ResolveError

MAX_HOPS = 16  # a longer chain of references is a mistake, not a design


class Hubs(Protocol):
    """Where hubs and namespace labels come from: the API server, or YAML files locally."""

    def hub(self, namespace: str, name: str) -> ModelHub | None: ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None: ...


@dataclass(frozen=True)
class ResolvedModel:
    """The model a job trains, after references."""

    model_id: str  # as the job names it
    hub: str  # namespace/name of the hub the job names
    source: str  # where the weights are
    source_hub: ModelHub  # the hub listing `source`: its storage secret reads the weights
    eula: Eula | None  # the nearest EULA that must be accepted, if any
    tasks: frozenset[str]  # tasks every entry of the chain allows
    defaults: list[ModelDefaults] = field(default_factory=list)  # nearest first


def resolve_model(
    job: FineTuneJob, hubs: Hubs, require_ready: bool = True, check_sharing: bool = True
) -> ResolvedModel:
    """Follow the job's model reference to a source; ResolveError says why not."""
    namespace = job.metadata.namespace or "default"
    ref = job.spec.model
    hub_namespace = ref.hub_ref.namespace or namespace
    return follow(
        namespace,
        f"namespace {namespace}",
        hub_namespace,
        ref.hub_ref.name,
        ref.model_id,
        hubs,
        require_ready,
        check_sharing,
    )


def follow(
    user_namespace: str,
    user: str,
    hub_namespace: str,
    hub_name: str,
    model_id: str,
    hubs: Hubs,
    require_ready: bool = True,
    check_sharing: bool = True,
) -> ResolvedModel:
    """Model `model_id` of hub `hub_namespace/hub_name`, as `user` (in `user_namespace`, a job's
    or a referring hub's) sees it: references followed, each hop's sharing checked (unless
    `check_sharing` is False: a job whose training has started, see controller/model_access)."""
    first_hub, first_model = f"{hub_namespace}/{hub_name}", model_id
    entries, seen = [], []
    while True:
        key = f"{hub_namespace}/{hub_name}"
        if (key, model_id) in seen:
            chain = " -> ".join(f"{h}:{m}" for h, m in seen + [(key, model_id)])
            raise ResolveError("ReferenceCycle", f"model references form a cycle: {chain}")
        if len(seen) >= MAX_HOPS:
            raise ResolveError("ReferenceCycle", f"more than {MAX_HOPS} model references")
        seen.append((key, model_id))
        hub = hubs.hub(hub_namespace, hub_name)
        if hub_namespace != user_namespace and (
            hub is None or (check_sharing and not may_use(hub, user_namespace, hubs))
        ):
            # One answer whether the hub exists or not: a team must not learn which hubs exist
            # in namespaces it cannot read.
            raise access_denied(key, user)
        if hub is None:
            raise ResolveError(
                "HubNotFound", f"ModelHub {key} does not exist (yet); waiting for it", retry=True
            )
        entry = next((m for m in hub.spec.models if m.model_id == model_id), None)
        if entry is None:
            known = ", ".join(m.model_id for m in hub.spec.models)
            raise ResolveError(
                "ModelNotFound", f"ModelHub {key} has no model {model_id!r} (it has: {known})"
            )
        entries.append((hub, entry))
        if entry.reference is None:
            break
        user_namespace, user = hub.metadata.namespace or "default", f"ModelHub {key}"
        hub_namespace = entry.reference.hub_ref.namespace or hub.metadata.namespace or "default"
        hub_name, model_id = entry.reference.hub_ref.name, entry.reference.model_id

    source_hub, source_entry = entries[-1]
    if require_ready:
        check_ready(source_hub, source_entry)
    eulas = [e.eula for _, e in entries if e.eula is not None and e.eula.required]
    tasks = frozenset({"domain-adaptation", "instruction"})
    for _, entry in entries:
        if entry.tasks is not None:
            tasks &= set(entry.tasks)
    return ResolvedModel(
        model_id=first_model,
        hub=first_hub,
        source=source_entry.source,
        source_hub=source_hub,
        eula=eulas[0] if eulas else None,
        tasks=tasks,
        defaults=[e.defaults for _, e in entries if e.defaults is not None],
    )


def access_denied(key: str, user: str) -> ResolveError:
    return ResolveError(
        "HubAccessDenied",
        f"ModelHub {key} does not exist or is not shared with {user}: its spec.sharedWith "
        "must list the namespace or select it by label",
    )


def check_ready(hub: ModelHub, entry: HubModel) -> None:
    """The hub's status must say the model's source was found; not yet known means wait."""
    key = f"{hub.metadata.namespace}/{hub.metadata.name}"
    models = (hub.status.models if hub.status else None) or []
    state = next((m for m in models if m.model_id == entry.model_id), None)
    if state is None:
        raise ResolveError(
            "ModelNotReady", f"ModelHub {key} has not checked model {entry.model_id!r} yet", True
        )
    if not state.ready:
        raise ResolveError(
            "ModelNotReady",
            f"ModelHub {key}: model {entry.model_id!r} is not ready: {state.message}",
            retry=True,
        )


def check_job(job: FineTuneJob, model: ResolvedModel) -> None:
    """The job may train this model: EULA accepted if required, the task allowed."""
    if model.eula is not None and not job.spec.accept_eula:
        raise ResolveError(
            "EulaNotAccepted",
            f"model {model.model_id!r} requires accepting its EULA (version "
            f"{model.eula.version}, {model.eula.url}): set spec.acceptEula: true",
        )
    hp = job.spec.hyperparameters
    instruction = hp is not None and hp.instruction_tuned
    task = "instruction" if instruction else "domain-adaptation"
    if task not in model.tasks:
        allowed = ", ".join(sorted(model.tasks)) or "none"
        raise ResolveError(
            "TaskNotSupported",
            f"model {model.model_id!r} is not offered for {task} tuning (tasks: {allowed}); "
            "check spec.hyperparameters.instruction_tuned",
        )


def may_use(hub: ModelHub, namespace: str, hubs: Hubs) -> bool:
    """The hub's own namespace, the listed ones, and those its selector matches."""
    if namespace == (hub.metadata.namespace or "default"):
        return True
    shared = hub.spec.shared_with
    if shared is None:
        return False
    if shared.namespaces and namespace in shared.namespaces:
        return True
    if shared.namespace_selector is None:
        return False
    labels = hubs.namespace_labels(namespace)
    return labels is not None and selector_matches(shared.namespace_selector, labels)


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics; an empty selector matches everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or []:
        present, value = requirement.key in labels, labels.get(requirement.key)
        values = requirement.values or []
        ok = {
            "In": present and value in values,
            "NotIn": not present or value not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not ok:
            return False
    return True
