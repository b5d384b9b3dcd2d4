"""The test API server behaves as kopf, kubectl and our CRDs need a Kubernetes API server to."""

import asyncio
import copy
import time
from pathlib import Path

import kmock
import kopf
import kubernetes
import pytest
import pytest_asyncio

from kubetune.api.manifests import read_file
from tests.support.apiserver import (
    ApiError,
    ApiServer,
    apiserver_fixture,  # noqa: F401  (the `apiserver` fixture)
    jsonpath,
    run_operator,
)
from tests.support.upstream import pytorchjob_crd, why_not

pytestmark = pytest.mark.asyncio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_JOB = EXAMPLES / "finetunejob-domain-adaptation.yaml"
NS = "team-a"


def example_job(name: str | None = None) -> dict:
    """The example FineTuneJob, read with kubectl's YAML number rules (`2e-4` is a float)."""
    job = copy.deepcopy(next(read_file(EXAMPLE_JOB)).body)
    if name:
        job["metadata"]["name"] = name
    return job


def config_map(name: str, labels: dict | None = None, **metadata) -> dict:
    meta = {"name": name, "namespace": NS, "labels": labels or {}} | metadata
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


async def watch_started(api: ApiServer, path_end: str) -> None:
    """Until a watch of that path streams (the server logs watches as they start)."""
    async with asyncio.timeout(5):
        while not any(c.path.endswith(path_end) and "watch=true" in c.query for c in api.requests):
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def api(apiserver: ApiServer) -> ApiServer:
    await apiserver.create_namespace(NS)
    return apiserver


# ----- objects, metadata, selectors ------------------------------------------------------------


async def test_create_sets_server_metadata_and_get_returns_it(api):
    created = await api.create(config_map("one"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    assert await api.get("ConfigMap", NS, "one") == created


async def test_list_filters_by_label_selector_and_reads_as_a_list(api):
    await api.create(config_map("a", {"app": "web", "tier": "front"}))
    await api.create(config_map("b", {"app": "db"}))
    await api.create(config_map("c", {"app": "batch", "tier": "back"}))

    async def names(selector: str) -> list[str]:
        items = await api.list("ConfigMap", NS, labelSelector=selector)
        return [item["metadata"]["name"] for item in items]

    assert await names("app=web") == ["a"]
    assert await names("app==db") == ["b"]
    assert await names("app in (web,db)") == ["a", "b"]
    assert await names("app notin (web,db)") == ["c"]
    assert await names("app!=web") == ["b", "c"]
    assert await names("tier") == ["a", "c"]
    assert await names("!tier") == ["b"]
    assert await names("app in (web, batch),tier=back") == ["c"]
    listed = await api.request("GET", api.path("ConfigMap", NS))
    assert (listed["kind"], listed["apiVersion"]) == ("ConfigMapList", "v1")
    assert int(listed["metadata"]["resourceVersion"]) >= 3


async def test_namespace_comes_from_the_url(api):
    body = config_map("no-namespace")
    del body["metadata"]["namespace"]
    created = await api.request("POST", api.path("ConfigMap", NS), body)
    assert created["metadata"]["namespace"] == NS
    with pytest.raises(ApiError) as error:
        await api.request("POST", api.path("ConfigMap", "default"), config_map("elsewhere"))
    assert error.value.status == 400


async def test_objects_need_an_existing_namespace(api):
    with pytest.raises(ApiError) as error:
        await api.create(config_map("x") | {"metadata": {"name": "x", "namespace": "nowhere"}})
    assert error.value.status == 404 and 'namespaces "nowhere" not found' in error.value.message


async def test_namespaces_are_created_and_read_with_their_labels(api):
    await api.create_namespace("team-b", {"kubetune.io/hub": "curated"})
    namespace = await api.get("Namespace", None, "team-b")
    assert namespace["metadata"]["labels"] == {
        "kubetune.io/hub": "curated",
        "kubernetes.io/metadata.name": "team-b",  # the API server adds it
    }
    assert namespace["status"]["phase"] == "Active"
    selected = await api.list("Namespace", labelSelector="kubetune.io/hub=curated")
    assert [n["metadata"]["name"] for n in selected] == ["team-b"]
    assert {"default", NS, "team-b"} <= {n["metadata"]["name"] for n in await api.list("ns")}


async def test_built_in_kinds_work_through_the_kubernetes_client(api):
    client = kubernetes.config.new_client_from_config(str(api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)

    def use_the_client():  # a blocking client: in a thread, the server runs in this loop
        secret = {"metadata": {"name": "s3"}, "stringData": {"AWS_ACCESS_KEY_ID": "key"}}
        core.create_namespaced_secret(NS, secret)
        core.patch_namespaced_secret("s3", NS, {"metadata": {"labels": {"app": "web"}}})
        return core.list_namespaced_secret(NS, label_selector="app=web").items

    (secret,) = await asyncio.to_thread(use_the_client)
    assert secret.data == {"AWS_ACCESS_KEY_ID": "a2V5"}  # stringData lands base64 in data
    assert secret.string_data is None


async def test_faults_are_injected_with_kmock_reactions(api):
    api.emulator["post", kmock.resource("v1/configmaps")][:1] << 503 << {"message": "injected"}
    with pytest.raises(ApiError) as error:
        await api.create(config_map("flaky"))
    assert error.value.status == 503
    assert (await api.create(config_map("flaky")))["metadata"]["name"] == "flaky"  # once only


async def test_events_with_generate_name_get_unique_names(api):
    for api_version in ("v1", "events.k8s.io/v1"):
        event = {
            "apiVersion": api_version,
            "kind": "Event",
            "metadata": {"generateName": "kopf-event-", "namespace": NS},
        }
        first, second = await api.create(event), await api.create(event)
        assert first["metadata"]["name"].startswith("kopf-event-")
        assert first["metadata"]["name"] != second["metadata"]["name"]


async def test_discovery_names_core_v1_and_lists_no_short_names_on_subresources(api):
    core = await api.request("GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    for document in (core, await api.request("GET", "/apis/kubetune.io/v1alpha1")):
        for entry in document["resources"]:
            if "/" in entry["name"]:
                assert entry["shortNames"] == [], entry["name"]
    ours = {
        e["name"]: e for e in (await api.request("GET", "/apis/kubetune.io/v1alpha1"))["resources"]
    }
    assert ours["finetunejobs"]["shortNames"] == ["ftj"] and "finetunejobs/status" in ours
    crds = await api.list("customresourcedefinitions")
    assert "finetunejobs.kubetune.io" in {crd["metadata"]["name"] for crd in crds}


# ----- versions, generations, conflicts --------------------------------------------------------


async def test_generation_counts_spec_changes_and_resource_version_every_write(api):
    job = await api.create(example_job())
    name, rv = job["metadata"]["name"], int(job["metadata"]["resourceVersion"])

    labelled = await api.patch("ftj", NS, name, {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > rv

    suspended = await api.patch("ftj", NS, name, {"spec": {"suspend": True}})
    assert suspended["metadata"]["generation"] == 2

    same = await api.patch("ftj", NS, name, {"spec": {"suspend": True}})
    assert same["metadata"]["resourceVersion"] == suspended["metadata"]["resourceVersion"]

    with_status = await api.patch_status("ftj", NS, name, {"phase": "Running"})
    assert with_status["metadata"]["generation"] == 2
    assert int(with_status["metadata"]["resourceVersion"]) > int(
        suspended["metadata"]["resourceVersion"]
    )


async def test_stale_resource_version_conflicts(api):
    created = await api.create(config_map("cm"))
    stale = created["metadata"]["resourceVersion"]
    await api.patch("ConfigMap", NS, "cm", {"data": {"k": "newer"}})

    stale_patch = {"metadata": {"resourceVersion": stale}, "data": {"k": "lost"}}
    for write in (
        lambda: api.replace(created | {"data": {"k": "lost"}}),
        lambda: api.patch("ConfigMap", NS, "cm", stale_patch),
    ):
        with pytest.raises(ApiError) as error:
            await write()
        assert (error.value.status, error.value.reason) == (409, "Conflict")

    json_patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "replace", "path": "/data/k", "value": "lost"},
    ]
    with pytest.raises(ApiError) as error:  # kopf's finalizer patches: 422 means "retry later"
        await api.patch(
            "ConfigMap", NS, "cm", json_patch, content_type="application/json-patch+json"
        )
    assert error.value.status == 422
    assert (await api.get("ConfigMap", NS, "cm"))["data"] == {"k": "newer"}


async def test_replace_with_the_current_resource_version_succeeds(api):
    created = await api.create(example_job())
    replaced = await api.replace(created | {"spec": created["spec"] | {"suspend": True}})
    assert replaced["spec"]["suspend"] is True and replaced["metadata"]["generation"] == 2
    unversioned = copy.deepcopy(replaced)
    del unversioned["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as error:  # custom resources refuse unconditional updates
        await api.replace(unversioned)
    assert error.value.status == 422


async def test_duplicate_create_is_already_exists(api):
    await api.create(example_job())
    with pytest.raises(ApiError) as error:
        await api.create(example_job())
    assert (error.value.status, error.value.reason) == (409, "AlreadyExists")


# ----- schema enforcement ----------------------------------------------------------------------


async def test_invalid_finetunejob_is_refused_with_the_field_named(api):
    job = example_job("bad-dropout")
    job["spec"]["hyperparameters"]["lora_dropout"] = 1.5
    with pytest.raises(ApiError) as error:
        await api.create(job)
    status = error.value.body
    assert (status["code"], status["reason"], status["kind"]) == (422, "Invalid", "Status")
    assert status["message"].startswith('FineTuneJob.kubetune.io "bad-dropout" is invalid: ')
    assert "spec.hyperparameters.lora_dropout" in status["message"]
    cause = status["details"]["causes"][0]
    assert (cause["field"], cause["reason"]) == (
        "spec.hyperparameters.lora_dropout",
        "FieldValueInvalid",
    )
    assert await api.list("ftj", NS) == []


async def test_cel_rules_are_enforced(api):
    job = example_job()
    job["spec"]["hyperparameters"] |= {"int8_quantization": True, "enable_fsdp": True}
    with pytest.raises(ApiError) as error:
        await api.create(job)
    assert "int8_quantization and enable_fsdp cannot both be true" in error.value.message


async def test_unknown_fields_are_refused_when_strict_and_pruned_otherwise(api):
    job = example_job()
    job["spec"]["hyperparameters"]["lora_rank"] = 8  # a typo of lora_r
    with pytest.raises(ApiError) as error:
        await api.create(job, fieldValidation="Strict")  # what kubectl sends by default
    assert "spec.hyperparameters.lora_rank: field not declared in schema" in error.value.message
    created = await api.create(job)  # kopf and most clients send no fieldValidation
    assert "lora_rank" not in created["spec"]["hyperparameters"]


async def test_immutable_spec_fields_refuse_changes_while_suspend_may_change(api):
    name = (await api.create(example_job()))["metadata"]["name"]
    with pytest.raises(ApiError) as error:
        await api.patch("ftj", NS, name, {"spec": {"model": {"modelId": "another-model"}}})
    assert error.value.status == 422
    assert "spec.model cannot change after creation" in error.value.message
    resumed = await api.patch("ftj", NS, name, {"spec": {"suspend": True}})
    assert resumed["spec"]["suspend"] is True


async def test_status_subresource_writes_only_status_and_main_writes_never_do(api):
    job = await api.create(example_job() | {"status": {"phase": "Succeeded"}})
    assert "status" not in job  # dropped on create, as for any kind with a status subresource
    name = job["metadata"]["name"]

    patch = {"spec": {"suspend": True}, "status": {"phase": "Running"}}
    via_status = await api.patch("ftj", NS, name, patch, subresource="status")
    assert via_status["status"] == {"phase": "Running"}
    assert via_status["spec"] == job["spec"] and via_status["metadata"]["generation"] == 1

    via_main = await api.patch("ftj", NS, name, {"status": {"phase": "Failed"}})
    assert via_main["status"] == {"phase": "Running"}

    with pytest.raises(ApiError) as error:  # /status is held to the status schema
        await api.patch_status("ftj", NS, name, {"phase": "Bogus"})
    assert error.value.status == 422 and "status.phase" in error.value.message


@pytest.mark.skipif(not pytorchjob_crd(), reason=why_not())
async def test_pytorchjobs_are_served_and_checked_against_their_schema(api):
    template = {"spec": {"containers": [{"name": "pytorch", "image": "trainer:1"}]}}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train", "namespace": NS},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": template}}},
    }
    created = await api.create(job)
    assert created["metadata"]["generation"] == 1
    job["metadata"]["name"] = "train-bad"
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(ApiError) as error:
        await api.create(job)
    assert error.value.status == 422 and "replicas" in error.value.message


# ----- deletion --------------------------------------------------------------------------------


async def test_deleting_an_owner_deletes_its_dependents(api):
    owner = await api.create(example_job())
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "controller": True,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    await api.create(config_map("child", ownerReferences=[reference]))
    await api.create(config_map("bystander"))

    await api.delete("ftj", NS, owner["metadata"]["name"])
    assert [cm["metadata"]["name"] for cm in await api.list("ConfigMap", NS)] == ["bystander"]


async def test_deleting_a_namespace_deletes_what_is_in_it(api):
    await api.create(config_map("inside"))
    await api.delete("Namespace", None, NS)
    assert await api.list("ConfigMap", NS) == []


async def test_finalizers_hold_deletion_until_the_last_one_is_removed(api):
    await api.create(config_map("held", finalizers=["kubetune.io/cleanup"]))
    marked = await api.delete("ConfigMap", NS, "held")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await api.get("ConfigMap", NS, "held"))["metadata"]["deletionTimestamp"]

    await api.patch("ConfigMap", NS, "held", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiError) as error:
        await api.get("ConfigMap", NS, "held")
    assert error.value.status == 404


# ----- watches ---------------------------------------------------------------------------------


async def test_watch_resumes_after_a_resource_version_without_replaying(api):
    await api.create(config_map("before"))
    listed = await api.request("GET", api.path("ConfigMap", NS))
    since = listed["metadata"]["resourceVersion"]
    await api.create(config_map("after"))
    await api.patch("ConfigMap", NS, "before", {"data": {"k": "changed"}})
    await api.delete("ConfigMap", NS, "after")

    events = await api.watch("ConfigMap", NS, resourceVersion=since)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "before"),
        ("DELETED", "after"),
    ]
    replayed = await api.watch("ConfigMap", NS)  # no resourceVersion: the current state first
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replayed] == [("ADDED", "before")]


async def test_watch_streams_live_events_matching_its_selector(api):
    watching = asyncio.create_task(api.watch("ConfigMap", NS, seconds=0.5, labelSelector="app=web"))
    await watch_started(api, "/configmaps")
    await api.create(config_map("web", {"app": "web"}))
    await api.create(config_map("db", {"app": "db"}))
    await api.patch("ConfigMap", NS, "web", {"metadata": {"labels": {"app": "api"}}})
    events = await watching
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "web"),
        ("DELETED", "web"),  # leaving the selector reads as a deletion
    ]


# ----- kopf ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [{"namespaces": [NS]}, {"clusterwide": True}])
async def test_a_kopf_operator_reconciles_against_the_server(api, scope):
    registry = kopf.OperatorRegistry()  # one per test: handlers of other tests stay out

    @kopf.on.create("kubetune.io", "v1alpha1", "finetunejobs", registry=registry)
    async def create_config(body, name, namespace, patch, **_):
        child = config_map(f"{name}-config") | {"metadata": {"name": f"{name}-config"}}
        kopf.adopt(child, owner=body)
        await api.create(child)
        patch.status["phase"] = "Pending"

    deleted = asyncio.Event()

    @kopf.on.delete("kubetune.io", "v1alpha1", "finetunejobs", registry=registry)
    async def clean_up(**_):  # makes kopf hold the job with a finalizer, JSON-patched
        deleted.set()

    async with run_operator(api, registry, **scope):
        started = time.monotonic()
        job = await api.create(example_job())
        child = await api.wait_for("ConfigMap", NS, "sec-filings-config")
        reconciled = await api.wait_for(
            "ftj", NS, "sec-filings", lambda obj: obj.get("status", {}).get("phase") == "Pending"
        )
        assert time.monotonic() - started < 2
        assert child["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert reconciled["metadata"]["generation"] == 1
        assert reconciled["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

        await api.delete("ftj", NS, "sec-filings")
        await asyncio.wait_for(deleted.wait(), 2)
        await api.wait_deleted("ftj", NS, "sec-filings")
        assert await api.list("ConfigMap", NS) == []
    writes = [call for call in api.requests if call.method in ("POST", "PATCH", "PUT")]
    assert all(call.status < 400 for call in writes), writes


# ----- kubectl ---------------------------------------------------------------------------------


async def test_kubectl_applies_gets_with_printer_columns_and_waits(api):
    applied = await api.kubectl("apply", "--validate=false", "-f", str(EXAMPLE_JOB))
    assert applied.returncode == 0, applied.stderr
    assert "finetunejob.kubetune.io/sec-filings created" in applied.stdout
    created = await api.get("ftj", NS, "sec-filings")
    assert created["spec"]["hyperparameters"]["learning_rate"] == 2e-4

    listed = await api.kubectl("get", "ftj", "-n", NS)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "MODEL", "PROGRESS", "AGE"]
    assert row.split()[:2] == ["sec-filings", "meta-textgeneration-llama-3-2-1b"]

    waiting = asyncio.create_task(
        api.kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "ftj/sec-filings",
            "-n",
            NS,
            "--timeout=10s",
        )
    )
    await watch_started(api, "/finetunejobs")  # so that the watch, not a GET, sees the change
    await api.patch_status("ftj", NS, "sec-filings", {"phase": "Succeeded"})
    waited = await waiting
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout

    wide = await api.kubectl("get", "ftj", "sec-filings", "-n", NS, "-o", "wide")
    header, row = wide.stdout.splitlines()
    assert header.split()[4:] == ["AGE", "HUB", "EVAL-LOSS", "ETA", "ARTIFACTS"]  # priority 1
    assert row.split()[:2] == ["sec-filings", "Succeeded"] and "curated" in row.split()


async def test_printer_column_paths_cover_filters():  # async: the module is asyncio-marked
    obj = {
        "status": {
            "conditions": [
                {"type": "Running", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]
        }
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert jsonpath(obj, ".status.conditions[0].type") == "Running"
    assert jsonpath(obj, ".status.phase") is None
