"""The chart's RBAC grants exactly what the operator calls: its own API calls
(kubetune.controller.cluster.API_CALLS) and kopf's (below). Nothing more, nothing less, no
wildcards; cluster-scoped resources in the ClusterRole, the rest in a Role per watched namespace
when the operator watches a list of namespaces."""

import pytest
import yaml
from kopf._cogs.structs import references

from kubetune.controller.cluster import api_calls
from tests.chart.render import ALL, ALL_OPTIONS, DEFAULT, NAMESPACE, find, objects, one, rendered

# What kopf 1.45 itself calls, by mode (read from its source, kopf/_core/...):
KOPF_CALLS = {
    # Whole cluster (--all-namespaces): peering in a ClusterKopfPeering; no namespace listing.
    "clusterwide": [
        ("kopf.dev", "clusterkopfpeerings", ["list", "watch", "patch"]),  # engines/peering.py
        ("apiextensions.k8s.io", "customresourcedefinitions", ["list", "watch"]),  # observation
        ("", "events", ["create"]),  # kopf.event() -> engines/posting.py
    ],
    # Listed namespaces (--namespace ...): peering in a KopfPeering in each of them, and the
    # namespace observer lists and watches namespaces to match the list.
    "namespaced": [
        ("kopf.dev", "kopfpeerings", ["list", "watch", "patch"]),
        ("apiextensions.k8s.io", "customresourcedefinitions", ["list", "watch"]),
        ("", "namespaces", ["list", "watch"]),
        ("", "events", ["create"]),
    ],
}
CLUSTER_SCOPED = {
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
}

Triple = tuple[str, str, str]  # (API group, resource, verb)


def triples(calls) -> set[Triple]:
    return {(group, resource, verb) for group, resource, verbs in calls for verb in verbs}


# trainingBackend (chart value) -> the training job kinds the operator may create.
BACKEND_KINDS = {
    "auto": {"TrainJob", "PyTorchJob"},
    "trainjob": {"TrainJob"},
    "pytorchjob": {"PyTorchJob"},
}


def needed(mode: str, backend: str = "auto") -> set[Triple]:
    return triples(api_calls(BACKEND_KINDS[backend])) | triples(KOPF_CALLS[mode])


def granted(role: dict) -> set[Triple]:
    found = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    found.add((group, resource, verb))
    return found


def compare(role: dict, expected: set[Triple]) -> None:
    found = granted(role)
    name = f"{role['kind']} {role['metadata'].get('namespace', '')}/{role['metadata']['name']}"
    assert found == expected, (
        f"{name}: grants {sorted(found - expected)} the operator does not use; "
        f"misses {sorted(expected - found)} it calls"
    )


def cluster_scoped(calls: set[Triple]) -> set[Triple]:
    return {t for t in calls if t[:2] in CLUSTER_SCOPED}


def test_kopf_resources_are_the_ones_kopf_uses():
    """KOPF_CALLS names kopf's own resources: a kopf upgrade that moves them fails here."""
    kopf = [
        references.CLUSTER_PEERINGS_K,
        references.NAMESPACED_PEERINGS_K,
        references.CRDS,
        references.NAMESPACES,
        references.EVENTS,
    ]
    backbone = {(selector.group or "", selector.any_name) for selector in kopf}
    named = {(group, resource) for calls in KOPF_CALLS.values() for group, resource, _ in calls}
    assert named == backbone


def test_whole_cluster_one_cluster_role_with_exactly_the_calls():
    docs = objects(rendered(*DEFAULT))
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    compare(one(docs, "ClusterRole"), needed("clusterwide"))


@pytest.mark.parametrize("backend", sorted(BACKEND_KINDS))
def test_the_role_grants_the_training_job_kinds_the_backend_allows(backend):
    docs = objects(rendered(*DEFAULT, "--set", f"trainingBackend={backend}"))
    compare(one(docs, "ClusterRole"), needed("clusterwide", backend))


def test_listed_namespaces_roles_there_and_cluster_scoped_calls_only_cluster_wide():
    docs = objects(rendered(*ALL))
    backend = yaml.safe_load(ALL_OPTIONS.read_text())["trainingBackend"]
    calls = needed("namespaced", backend)
    compare(one(docs, "ClusterRole"), cluster_scoped(calls))
    roles = find(docs, "Role")
    watched = yaml.safe_load(ALL_OPTIONS.read_text())["watchNamespaces"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        compare(role, calls - cluster_scoped(calls))


@pytest.mark.parametrize("values", [DEFAULT, ALL], ids=["default", "all-options"])
def test_bindings_give_the_roles_to_the_operator_service_account(values):
    docs = objects(rendered(*values))
    account = one(docs, "ServiceAccount")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"]}
    subject["namespace"] = NAMESPACE
    pairs = [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")]
    for binding_kind, role_kind in pairs:
        roles = {
            (r["metadata"].get("namespace"), r["metadata"]["name"]) for r in find(docs, role_kind)
        }
        bindings = find(docs, binding_kind)
        assert len(bindings) == len(roles)
        for binding in bindings:
            assert binding["subjects"] == [subject]
            assert binding["roleRef"]["kind"] == role_kind
            assert (binding["metadata"].get("namespace"), binding["roleRef"]["name"]) in roles
