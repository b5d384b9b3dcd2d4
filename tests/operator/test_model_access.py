"""A team trains from a hub in another namespace without a copy of the hub's Secret: the operator
writes the job a Secret of presigned URLs for exactly the model's files, signed with the hub's
keys, refreshes it while the job is unfinished, and removes it when training ends or the hub is
no longer shared. Against SeaweedFS (it checks signatures and expiry) and both API servers:
the test API server and a real kube-apiserver with a controller-manager."""

import asyncio
import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from kubetune.config import OperatorConfig
from tests.cluster.build import go_command
from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OUR_CRDS
from tests.support.apiserver import ApiError, serve
from tests.support.operator import operator_in_loop
from tests.support.realserver import KubeApiServer
from tests.support.seaweed import HUB_KEY_ID, HUB_SECRET, seaweed_fixture  # noqa: F401
from tests.support.upstream import pytorchjob_crd

pytestmark = pytest.mark.asyncio

PLATFORM, TEAM, OTHER = "ml-platform", "team-a", "team-z"
CONFIG = OperatorConfig(progress_interval_seconds=0.2, hub_recheck_seconds=0.5)
MODEL = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x00" * 5000,
         "tokenizer.json": b"{}"}  # fmt: skip


@pytest.fixture(scope="module")
def real_plane():
    if not go_command():
        pytest.skip("needs Go to build kube-controller-manager and fetch the PyTorchJob CRD")
    plane = ControlPlane(components=("controller-manager",), crds=[*OUR_CRDS, pytorchjob_crd()])
    plane.start()
    yield plane
    plane.stop()


@pytest_asyncio.fixture(
    params=["test-server", pytest.param("kube-apiserver", marks=pytest.mark.cluster)]
)
async def cluster(request, tmp_path) -> AsyncIterator:
    if request.param == "test-server":
        async with serve(tmp_path) as server:
            yield await with_namespaces(server)
        return
    server = KubeApiServer.of(request.getfixturevalue("real_plane"))
    try:
        yield await with_namespaces(server)
    finally:
        await server.clear((PLATFORM, TEAM, OTHER))
        await server.close()


async def with_namespaces(server):
    for namespace in (PLATFORM, TEAM, OTHER):
        try:
            await server.create_namespace(namespace)
        except ApiError as err:
            if err.status != 409:
                raise
    return server


@pytest.fixture
def store(seaweed) -> dict:
    """Fresh buckets: the platform's models (a model folder, and a neighbour no URL may read),
    the team's data and output."""
    suffix = uuid.uuid4().hex[:8]
    buckets = {k: f"{k}-{suffix}" for k in ("models", "data", "out")}
    hub_s3, team_s3 = seaweed.client("hub"), seaweed.client("team")
    hub_s3.create_bucket(Bucket=buckets["models"])
    for key, data in MODEL.items():
        hub_s3.put_object(Bucket=buckets["models"], Key=f"llama/{key}", Body=data)
    hub_s3.put_object(Bucket=buckets["models"], Key="llama-private/weights.bin", Body=b"secret")
    for bucket in (buckets["data"], buckets["out"]):
        team_s3.create_bucket(Bucket=bucket)
    team_s3.put_object(Bucket=buckets["data"], Key="train/data.csv", Body=b"text\nhello\n")
    return {"seaweed": seaweed, **buckets}


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


def hub(store, shared_with=(TEAM,), **storage) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
        "metadata": {"name": "curated", "namespace": PLATFORM},
        "spec": {
            "sharedWith": {"namespaces": list(shared_with)},
            "storage": {"secretRef": {"name": "model-store"}, **storage},
            "models": [{"modelId": "llama", "source": f"s3://{store['models']}/llama/"}],
        },
    }  # fmt: skip


def job(store, name="bot", namespace=TEAM, hub_name="curated") -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"hubRef": {"name": hub_name, "namespace": PLATFORM}, "modelId": "llama"},
            "data": {"train": f"s3://{store['data']}/train/", "secretRef": {"name": "data-store"}},
            "output": {"uri": f"s3://{store['out']}/{name}/",
                       "secretRef": {"name": "out-store"}},
            "resources": {"accelerator": "none"},
        },
    }  # fmt: skip


async def setup(cluster, store, **storage) -> None:
    """The hub's Secret in the platform's namespace only; the team's own two in the team's."""
    seaweed = store["seaweed"]
    objects = [secret("model-store", PLATFORM, seaweed.credentials("hub")),
               secret("data-store", TEAM, seaweed.credentials("team")),
               secret("out-store", TEAM, seaweed.credentials("team"))]  # fmt: skip
    for obj in objects:
        try:
            await cluster.create(obj)
        except ApiError as err:  # the real server's, from an earlier test of the module
            if err.status != 409:
                raise
            await cluster.patch("secret", obj["metadata"]["namespace"], obj["metadata"]["name"],
                                {"data": obj["data"]})  # fmt: skip
    await cluster.create(hub(store, **storage))


def urls_of(model_secret: dict) -> dict:
    return json.loads(base64.b64decode(model_secret["data"]["urls.json"]))


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def condition(obj, type_):
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else None


def access(reason):
    return lambda o: (condition(o, "ModelAccess") or {}).get("reason") == reason


async def set_training_state(cluster, state: str, name: str = "bot") -> None:
    conditions = [{"type": "Created", "status": "True", "reason": "Created"},
                  {"type": state, "status": "True", "reason": f"PyTorchJob{state}"}]  # fmt: skip
    await cluster.patch_status("PyTorchJob", TEAM, name, {"conditions": conditions})


async def test_a_team_without_the_hubs_secret_gets_urls_for_exactly_its_model(cluster, store):
    await setup(cluster, store)
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store))
        pj = await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)
        urls_secret = await cluster.get("secret", TEAM, "bot-model-urls")
        ftj = await cluster.wait_for("ftj", TEAM, "bot", access("PresignedUrls"), timeout=10)
    assert list(urls_secret["data"]) == ["urls.json"]  # URLs only: no AWS_* key
    assert urls_secret["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    document = urls_of(urls_secret)
    assert document["source"] == f"s3://{store['models']}/llama/"
    assert [f["key"] for f in document["files"]] == sorted(MODEL)  # not llama-private/
    text = json.dumps(urls_secret)
    assert HUB_SECRET not in text and "AWS_SECRET_ACCESS_KEY" not in text
    for entry in document["files"]:
        assert fetch(entry["url"]) == (200, MODEL[entry["key"]])
        # The access key id is in each URL (X-Amz-Credential, as SigV4 has it); nothing else.
        assert f"X-Amz-Credential={HUB_KEY_ID}%2F" in entry["url"]
    # A URL cannot be bent to another object of the store, nor to another method.
    first = document["files"][0]["url"]
    other = first.replace("/llama/config.json", "/llama-private/weights.bin")
    status, said = fetch(other)
    assert status == 403 and b"SignatureDoesNotMatch" in said
    put = urllib.request.Request(first, data=b"overwritten", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(put, timeout=10)
    assert refused.value.code == 403
    # The pods read the model from the mounted URLs: the hub's Secret is not theirs to name.
    [pod] = [r["template"]["spec"] for r in pj["spec"]["pytorchReplicaSpecs"].values()]
    [container] = pod["containers"]
    assert {e["secretRef"]["name"] for e in container["envFrom"]} == {"data-store", "out-store"}
    assert {"name": "KUBETUNE_MODEL_URLS",
            "value": "/var/run/secrets/kubetune/model/urls.json"} in container["env"]  # fmt: skip
    assert {"name": "model-urls", "secret": {"secretName": "bot-model-urls", "defaultMode": 0o440}
            } in pod["volumes"]  # fmt: skip
    assert "Secret team-a/bot-model-urls" in condition(ftj, "ModelAccess")["message"]
    assert await cluster.list("secret", TEAM, labelSelector="kubetune.io/finetunejob=bot")


async def test_urls_are_signed_again_before_they_expire(cluster, store):
    config = OperatorConfig.model_validate({
        "progressIntervalSeconds": 0.2, "hubRecheckSeconds": 0.5,
        "presignedUrls": {"lifetimeSeconds": 12, "refreshMarginSeconds": 8}})  # fmt: skip
    await setup(cluster, store)
    async with operator_in_loop(cluster, config):
        await cluster.create(job(store))
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)
        await set_training_state(cluster, "Running")
        first = await cluster.get("secret", TEAM, "bot-model-urls")
        expires = first["metadata"]["annotations"]["kubetune.io/expires-at"]
        later = lambda s: s["metadata"]["annotations"]["kubetune.io/expires-at"] > expires  # noqa: E731
        second = await cluster.wait_for("secret", TEAM, "bot-model-urls", later, timeout=10)
        old, new = urls_of(first)["files"][0]["url"], urls_of(second)["files"][0]["url"]
        assert old != new and fetch(new)[0] == 200
        await asyncio.sleep(13)  # the first URLs' lifetime is over; the refreshed ones live on
        status, said = fetch(old)
        assert status == 403 and b"expired" in said.lower()
        third = await cluster.get("secret", TEAM, "bot-model-urls")
        assert fetch(urls_of(third)["files"][0]["url"])[0] == 200
        ftj = await cluster.get("ftj", TEAM, "bot")
    assert ftj["status"]["phase"] == "Running"
    assert condition(ftj, "ModelAccess")["status"] == "True"


async def test_revoking_sharing_stops_the_refreshes_and_says_so(cluster, store):
    await setup(cluster, store)
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store))
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)
        await set_training_state(cluster, "Running")
        await cluster.wait_for("ftj", TEAM, "bot", access("PresignedUrls"), timeout=10)
        await cluster.patch("mhub", PLATFORM, "curated", {"spec": {"sharedWith": None}})
        ftj = await cluster.wait_for("ftj", TEAM, "bot", access("HubAccessDenied"), timeout=10)
        await cluster.wait_deleted("secret", TEAM, "bot-model-urls", timeout=10)
        await asyncio.sleep(1)  # refresh after refresh: it stays gone
        assert not [s for s in await cluster.list("secret", TEAM)
                    if s["metadata"]["name"] == "bot-model-urls"]  # fmt: skip
        # Shared again: the URLs come back.
        await cluster.patch("mhub", PLATFORM, "curated",
                            {"spec": {"sharedWith": {"namespaces": [TEAM]}}})  # fmt: skip
        await cluster.wait_for("secret", TEAM, "bot-model-urls", timeout=10)
        await cluster.wait_for("ftj", TEAM, "bot", access("PresignedUrls"), timeout=10)
    revoked = condition(ftj, "ModelAccess")
    assert revoked["status"] == "False"
    assert "no longer refreshed" in revoked["message"], revoked
    # Training goes on: the job is not made Failed by what it no longer needs.
    assert ftj["status"]["phase"] == "Running" and condition(ftj, "Failed") is None


async def test_a_deleted_hub_takes_the_urls_with_it(cluster, store):
    await setup(cluster, store)
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store))
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)
        await set_training_state(cluster, "Running")
        await cluster.wait_for("ftj", TEAM, "bot", access("PresignedUrls"), timeout=10)
        await cluster.delete("mhub", PLATFORM, "curated")
        await cluster.wait_deleted("secret", TEAM, "bot-model-urls", timeout=15)


async def test_the_urls_are_removed_when_training_ends(cluster, store):
    await setup(cluster, store)
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store))
        await cluster.wait_for("PyTorchJob", TEAM, "bot", timeout=20)
        await cluster.get("secret", TEAM, "bot-model-urls")
        await set_training_state(cluster, "Succeeded")
        ftj = await cluster.wait_for("ftj", TEAM, "bot", access("TrainingEnded"), timeout=10)
        await cluster.wait_deleted("secret", TEAM, "bot-model-urls", timeout=10)
    assert ftj["status"]["phase"] == "Succeeded"


async def test_access_secret_keeps_the_hubs_secret_a_team_must_copy(cluster, store):
    await setup(cluster, store, access="secret")
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store))
        waiting = lambda o: (condition(o, "DataValidated") or {}).get("reason") == "SecretNotFound"  # noqa: E731
        ftj = await cluster.wait_for("ftj", TEAM, "bot", waiting, timeout=10)
    assert "Secret team-a/model-store (model storage credentials)" in condition(
        ftj, "DataValidated")["message"]  # fmt: skip


async def test_a_team_learns_nothing_of_hubs_it_may_not_use(cluster, store):
    await setup(cluster, store)
    async with operator_in_loop(cluster, CONFIG):
        await cluster.create(job(store, name="unshared", namespace=OTHER))
        await cluster.create(job(store, name="missing", namespace=OTHER, hub_name="nowhere"))
        failed = lambda o: condition(o, "Failed") is not None  # noqa: E731
        unshared = await cluster.wait_for("ftj", OTHER, "unshared", failed, timeout=10)
        missing = await cluster.wait_for("ftj", OTHER, "missing", failed, timeout=10)
    said = [(condition(o, "Failed")["reason"], condition(o, "Failed")["message"],
             o["status"]["phase"]) for o in (unshared, missing)]  # fmt: skip
    assert said[0] == (
        "HubAccessDenied",
        "ModelHub ml-platform/curated does not exist or is not shared with namespace team-z: "
        "its spec.sharedWith must list the namespace or select it by label",
        "Failed",
    )
    assert said[1] == (said[0][0], said[0][1].replace("/curated ", "/nowhere "), said[0][2])
    assert await cluster.list("secret", OTHER) == []
