"""A team trains from a hub in another namespace, end to end, without a copy of the hub's
Secret: the chart's operator signs presigned URLs for the hub model's files with the hub's
Secret (in the platform's namespace), the training pod (run by the local kubelet) downloads the
model from them from SeaweedFS, which checks every signature, and trains with the team's own
data and output Secrets. Neither the hub's keys nor any URL's signature shows anywhere else."""

import base64
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from kubetune.config import load_config
from tests.cluster.e2e_support import (
    Operator,
    ensure_namespace,
    get,
    hub_ready,
    install_chart,
    kubectl,
    trainer_image,
    wait_for,
)
from tests.cluster.images import Image
from tests.cluster.kubelet import LocalKubelet
from tests.support.seaweed import HUB_SECRET, seaweed_fixture  # noqa: F401 (fixture)
from tests.support.training import make_job

pytestmark = pytest.mark.cluster
PLATFORM, TEAM, NODE = "hub-platform", "hub-team", "local-hub-0"
INSTANCE_TYPE = "local.hub"  # brings the pod to the local kubelet's node
PROFILE = {"accelerator": "none", "cpu": "1", "memory": "4Gi",
           "nodeSelector": {"node.kubernetes.io/instance-type": INSTANCE_TYPE}}  # fmt: skip
INIT_IMAGE = "alpine:3.10"
HYPERPARAMETERS = {"instruction_tuned": True, "epoch": 1, "learning_rate": 2e-3,
                   "per_device_train_batch_size": 4, "max_input_length": 32,
                   "checkpoint_interval_steps": 0}  # fmt: skip


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


@pytest.fixture(scope="module")
def stack(cluster, seaweed, tmp_path_factory):
    work = tmp_path_factory.mktemp("hub-access")
    for namespace in (PLATFORM, TEAM):
        ensure_namespace(cluster, namespace)
    install_chart(cluster)
    root = make_job(work / "job", samples=48)
    suffix = uuid.uuid4().hex[:8]
    buckets = {"models": f"hub-models-{suffix}", "team": f"team-{suffix}"}
    hub_s3, team_s3 = seaweed.client("hub"), seaweed.client("team")
    hub_s3.create_bucket(Bucket=buckets["models"])
    for path in (root / "model").iterdir():
        hub_s3.upload_file(str(path), buckets["models"], f"tiny/{path.name}")
    hub_s3.put_object(Bucket=buckets["models"], Key="other/weights.bin", Body=b"not theirs")
    buckets["model files"] = sorted(p.name for p in (root / "model").iterdir())
    team_s3.create_bucket(Bucket=buckets["team"])
    for path in (root / "data").iterdir():
        team_s3.upload_file(str(path), buckets["team"], f"data/{path.name}")
    # The hub's keys live in the platform's namespace only; the team has its own two Secrets.
    cluster.create([secret("model-store", PLATFORM, seaweed.credentials("hub")),
                    secret("data-store", TEAM, seaweed.credentials("team")),
                    secret("artifact-store", TEAM, seaweed.credentials("team"))])  # fmt: skip
    operator = Operator(cluster, work, "--log-level", "DEBUG", progressIntervalSeconds=1,
                        trainingBackend="pytorchjob",
                        instanceProfiles={INSTANCE_TYPE: PROFILE})  # fmt: skip
    image = load_config(operator.config).images.cpu
    kubelet = LocalKubelet(cluster, NODE, work / "kubelet",
                           images={image: trainer_image(), INIT_IMAGE: Image()},
                           labels={"node.kubernetes.io/instance-type": INSTANCE_TYPE})  # fmt: skip
    kubelet.start()
    operator.start()
    try:
        hub = {"apiVersion": "kubetune.io/v1alpha1", "kind": "ModelHub",
               "metadata": {"name": "curated", "namespace": PLATFORM},
               "spec": {"sharedWith": {"namespaces": [TEAM]},
                        "storage": {"secretRef": {"name": "model-store"}},
                        "models": [{"modelId": "tiny-llama",
                                    "source": f"s3://{buckets['models']}/tiny/"}]}}  # fmt: skip
        cluster.create([hub])
        wait_for("hub Ready", lambda: hub_ready(cluster, PLATFORM, "curated"), 60)
        yield cluster, kubelet, operator, buckets, seaweed
    finally:
        operator.stop()
        kubelet.stop()
        print(f"\noperator log: {operator.log}\nkubelet folder: {kubelet.workdir}")


def job(name: str, buckets: dict) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {
            "model": {"hubRef": {"name": "curated", "namespace": PLATFORM},
                      "modelId": "tiny-llama"},
            "data": {"train": f"s3://{buckets['team']}/data/",
                     "secretRef": {"name": "data-store"}},
            "hyperparameters": HYPERPARAMETERS,
            "resources": {"instanceType": INSTANCE_TYPE},
            "output": {"uri": f"s3://{buckets['team']}/out/{name}/",
                       "secretRef": {"name": "artifact-store"}},
        },
    }  # fmt: skip


def finished(plane, name: str) -> dict | None:
    found = get(plane, "ftj", "-n", TEAM, name) or {}
    return found if (found.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None


def test_a_team_trains_from_another_namespaces_hub_without_its_secret(stack):
    plane, kubelet, operator, buckets, seaweed = stack
    plane.create([job("cross-ns", buckets)])
    urls = lambda: get(plane, "secret", "-n", TEAM, "cross-ns-model-urls")  # noqa: E731
    urls_secret = wait_for("the model URLs' Secret", urls, 60)
    document = json.loads(base64.b64decode(urls_secret["data"]["urls.json"]))
    done = wait_for("the FineTuneJob to finish", lambda: finished(plane, "cross-ns"), 600, 1)
    pods = (get(plane, "pods", "-n", TEAM, "-l", "kubetune.io/finetunejob=cross-ns") or {})["items"]
    logs = {p["metadata"]["name"]: kubelet.log(TEAM, p["metadata"]["name"],
                                               p["spec"]["containers"][0]["name"])
            for p in pods}  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Succeeded", (status, {k: v[-3000:] for k, v in logs.items()})

    # The team namespace never held the hub's Secret; the job's held URLs for the model only.
    secrets = {s["metadata"]["name"] for s in get(plane, "secrets", "-n", TEAM)["items"]}
    assert "model-store" not in secrets
    assert list(urls_secret["data"]) == ["urls.json"]
    assert sorted(f["key"] for f in document["files"]) == buckets["model files"]
    assert HUB_SECRET not in json.dumps(urls_secret) and "other/" not in json.dumps(document)
    [pod] = pods
    [container] = pod["spec"]["containers"]
    assert not any("model-store" in json.dumps(e) for e in container.get("envFrom") or [])
    assert {"name": "KUBETUNE_MODEL_URLS",
            "value": "/var/run/secrets/kubetune/model/urls.json"} in container["env"]  # fmt: skip
    # Training over, the URLs are gone and the status says so.
    wait_for("the URLs' Secret removed", lambda: urls() is None, 30)
    access = next(c for c in status["conditions"] if c["type"] == "ModelAccess")
    assert (access["status"], access["reason"]) == ("False", "TrainingEnded"), access
    print("ModelAccess:", access)

    # Neither the hub's secret key nor any signature anywhere but that Secret: status, events,
    # ConfigMaps, the operator's log at DEBUG, the pod's log, the artifacts.
    signatures = {parse_qs(urlsplit(f["url"]).query)["X-Amz-Signature"][0]
                  for f in document["files"]}  # fmt: skip
    places = {"status": json.dumps(done),
              "events": kubectl(plane, "get", "events", "-n", TEAM, "-o", "json"),
              "configmaps": kubectl(plane, "get", "configmaps", "-n", TEAM, "-o", "json"),
              "operator log": operator.logs(), **logs}  # fmt: skip
    team_s3 = seaweed.client("team")
    listed = team_s3.list_objects_v2(Bucket=buckets["team"], Prefix="out/cross-ns/")["Contents"]
    for obj in listed:
        if not obj["Key"].endswith((".safetensors", ".png", ".pt", ".bin")):
            body = team_s3.get_object(Bucket=buckets["team"], Key=obj["Key"])["Body"].read()
            places[obj["Key"]] = body.decode(errors="replace")
    assert any(k.endswith("MANIFEST.json") for k in places), sorted(places)
    hits = {place: [s for s in (*signatures, HUB_SECRET, "X-Amz-Signature") if s in text]
            for place, text in places.items()}  # fmt: skip
    assert {p: found for p, found in hits.items() if found} == {}
    print(f"{len(document['files'])} model files through presigned URLs; "
          f"{len(places)} places grepped for the hub's key and the signatures")
