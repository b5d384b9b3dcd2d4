"""Security properties, checked on the running parts rather than assumed from the code:

- a hub is used only from the namespaces it is shared with (the running operator decides);
- credentials stay in their Secrets: canary values planted there appear nowhere else, neither
  in the API objects the operator writes, nor its log at DEBUG, nor `kubetune run --local`'s or
  the trainer's output;
- a cluster reads only s3:// URIs; object keys cannot write outside the download folder;
  template placeholders cannot reach attributes or indexes;
- every pod runs unprivileged, and the operator's RBAC names what it uses, no wildcards.
"""

import asyncio
import base64
import datetime
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import pytest_asyncio
import yaml

from kubetune.api.v1alpha1 import FineTuneJob, Hyperparameters, ModelHub
from kubetune.cli.operator_cmd import CREDENTIAL_LOGGERS, configure_logging
from kubetune.config import OperatorConfig
from kubetune.controller.presign import sign_model
from kubetune.local.files import FileHubs
from kubetune.render.configmap import render_configmap
from kubetune.render.pod import SECRET_PREFIXES
from kubetune.render.pytorchjob import render_pytorchjob
from kubetune.resolve.hubs import may_use
from kubetune.resolve.plan import plan
from kubetune.storage import StorageError, open_store
from kubetune_trainer.formats.samples import DataError
from kubetune_trainer.formats.templates import Template, parse_format
from tests.chart.render import ALL, DEFAULT, find, objects, one, rendered
from tests.support.apiserver import ApiError, ApiServer, serve
from tests.support.operator import operator_in_loop
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
    seed_objects,
)
from tests.support.seaweed import HUB_SECRET, seaweed_fixture  # noqa: F401 (fixture)
from tests.support.training import make_job

REPO = Path(__file__).resolve().parents[2]
PLATFORM, TEAM = "ml-platform", "team-a"
CONFIG = OperatorConfig(progress_interval_seconds=0.3, hub_recheck_seconds=5)
STRICT = {"fieldValidation": "Strict"}  # as kubectl apply sends


@pytest_asyncio.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[ApiServer]:
    """The test API server; a short request history keeps its cost per request flat."""
    async with serve(tmp_path, short_history=True) as server:
        yield server


def operator(api: ApiServer):
    return operator_in_loop(api, CONFIG)


def conditions(obj: dict) -> list[dict]:
    return (obj.get("status") or {}).get("conditions") or []


def has_reason(reason: str):
    return lambda obj: any(c["reason"] == reason for c in conditions(obj))


def phase(expected: str):
    return lambda obj: (obj.get("status") or {}).get("phase") == expected


def hub(name: str, namespace: str, bucket: str, **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"models": [{"modelId": "llama", "source": f"s3://{bucket}/llama/"}], **spec},
    }


def job(name: str, namespace: str, hub_name: str, hub_namespace: str, **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"hubRef": {"name": hub_name, "namespace": hub_namespace}, "modelId": "llama"},
            "data": {"train": "s3://sec-data/train/"},
            "output": {"uri": f"s3://sec-out/{namespace}/{name}/"},
            **spec,
        },
    }


def models_bucket() -> str:
    """A bucket holding model `llama`, and the jobs' data in bucket sec-data."""
    bucket = make_bucket()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="llama/config.json", Body=b"{}")
    make_bucket("sec-data")
    s3.put_object(Bucket="sec-data", Key="train/data.csv", Body=b"text\nhello\n")
    return bucket


# ----- hub sharing -------------------------------------------------------------------------

# Namespaces and their labels.
NAMESPACES = {
    "team-a": {},  # the listed one, and the home of hub "own"
    "team-b": {"kubetune.io/hub": "curated"},  # matches the label selector
    "team-c": {"kubetune.io/hub": "other"},  # a selector miss: same key, other value
    "team-gold": {"tier": "gold"},
    "team-blocked": {"tier": "blocked"},
    "team-d": {},  # no labels, not listed anywhere
}


def matching(key: str, operator: str, *values: str) -> dict:
    """spec.sharedWith selecting namespaces by one label requirement."""
    requirement = {"key": key, "operator": operator} | ({"values": list(values)} if values else {})
    return {"namespaceSelector": {"matchExpressions": [requirement]}}


# Hubs: (namespace, spec.sharedWith).
HUBS = {
    "own": ("team-a", None),
    "listed": (PLATFORM, {"namespaces": ["team-a"]}),
    "labelled": (PLATFORM, {"namespaceSelector": {"matchLabels": {"kubetune.io/hub": "curated"}}}),
    "gold-only": (PLATFORM, matching("tier", "In", "gold")),
    "not-blocked": (PLATFORM, matching("tier", "NotIn", "blocked")),
    "has-tier": (PLATFORM, matching("tier", "Exists")),
    "everyone": (PLATFORM, {"namespaceSelector": {}}),  # Kubernetes: empty selects all
    "private": (PLATFORM, None),
    "empty-sharing": (PLATFORM, {}),
}
# Which namespaces may use each hub, written out by hand (not computed by the resolver).
ALLOWED = {
    "own": {"team-a"},
    "listed": {"team-a"},
    "labelled": {"team-b"},
    "gold-only": {"team-gold"},
    "not-blocked": set(NAMESPACES) - {"team-blocked"},  # NotIn: unlabelled ones match too
    "has-tier": {"team-gold", "team-blocked"},
    "everyone": set(NAMESPACES),
    "private": set(),
    "empty-sharing": set(),
}
# A hub that refers to another: each hop is checked against the referring hub's namespace.
REFERRING = {
    # team-a's own hub, naming ml-platform/listed (shared with team-a): allowed for team-a
    "via-listed": ("team-a", "listed", {"team-a"}),
    # team-a's own hub, naming ml-platform/private: no one gets through it
    "via-private": ("team-a", "private", set()),
    # team-a's own hub naming ml-platform/labelled (shared with team-b only): denied, even for
    # team-b, which may use labelled directly but not through team-a's hub
    "via-labelled": ("team-a", "labelled", set()),
}


@pytest.mark.asyncio
async def test_hub_sharing_is_enforced_by_the_running_operator(apiserver, s3_endpoint, figures):
    bucket = models_bucket()
    for namespace, labels in {PLATFORM: {}, **NAMESPACES}.items():
        await apiserver.create_namespace(namespace, labels or None)
    hubs = {
        name: hub(name, ns, bucket, **({"sharedWith": shared} if shared is not None else {}))
        for name, (ns, shared) in HUBS.items()
    }
    for name, (ns, target, _) in REFERRING.items():
        reference = {"hubRef": {"name": target, "namespace": PLATFORM}, "modelId": "llama"}
        hubs[name] = hub(name, ns, bucket)
        hubs[name]["spec"]["models"] = [{"modelId": "llama", "reference": reference}]
    allowed = {**ALLOWED, **{name: users for name, (_, _, users) in REFERRING.items()}}
    # Every hub from every namespace: the job's name says which pair it is.
    pairs = {f"{h}-{ns}": (h, ns) for h in hubs for ns in NAMESPACES}

    async with operator(apiserver):
        for body in hubs.values():
            await apiserver.create(body, **STRICT)
        for name, body in hubs.items():
            checked = lambda o: (o.get("status") or {}).get("models")  # noqa: E731
            await apiserver.wait_for("mhub", body["metadata"]["namespace"], name, checked)
        for name, (hub_name, ns) in pairs.items():
            hub_ns = hubs[hub_name]["metadata"]["namespace"]
            await apiserver.create(job(name, ns, hub_name, hub_ns), **STRICT)
        outcomes = {}
        for name, (hub_name, ns) in pairs.items():
            went_ahead = lambda o: "trainingJob" in (o.get("status") or {})  # noqa: E731
            done = went_ahead if ns in allowed[hub_name] else phase("Failed")
            outcomes[name] = await apiserver.wait_for("ftj", ns, name, done, timeout=30)
        await asyncio.sleep(1)  # a denied job that went ahead late would show by now
        created = {
            (p["metadata"]["namespace"], p["metadata"]["name"])
            for ns in NAMESPACES
            for p in await apiserver.list("PyTorchJob", ns)
        }

    for name, (hub_name, ns) in pairs.items():
        ftj = outcomes[name]
        if ns in allowed[hub_name]:
            assert (ns, name) in created and ftj["status"]["phase"] == "Pending", ftj
        else:
            assert (ns, name) not in created, name
            assert ftj["status"]["phase"] == "Failed", (name, ftj["status"])
            failed = next(c for c in conditions(ftj) if c["type"] == "Failed")
            assert failed["reason"] == "HubAccessDenied", (name, failed)
            assert "spec.sharedWith" in failed["message"]
    # The pure resolver agrees with the running operator on the direct pairs.
    labels = {ns: {"kubernetes.io/metadata.name": ns, **extra} for ns, extra in NAMESPACES.items()}
    files = FileHubs([], labels)
    for hub_name in HUBS:
        model = ModelHub.model_validate(hubs[hub_name])
        assert {ns for ns in NAMESPACES if may_use(model, ns, files)} == ALLOWED[hub_name]
    figures.record("hub sharing combinations checked through the operator", len(pairs))
    figures.record(
        "of those, denied (HubAccessDenied, no PyTorchJob)",
        sum(ns not in allowed[h] for h, ns in pairs.values()),
    )


# ----- canary credentials ------------------------------------------------------------------

CANARIES = {  # per Secret: a leak names the Secret it came from
    secret: {
        "AWS_ACCESS_KEY_ID": f"AKIACANARY{tag.upper()}7Q",
        "AWS_SECRET_ACCESS_KEY": f"canary-{tag}-secret-key-5f0c2e9a",
        "AWS_SESSION_TOKEN": f"canary-{tag}-session-token-81d4b7",
    }
    for secret, tag in (("model-store", "model"), ("data-store", "data"), ("artifact-store", "out"))
}
CANARY_VALUES = [value for values in CANARIES.values() for value in values.values()]


def canary_hits(text: str) -> list[str]:
    """Canary values in text, as they are or base64-encoded (as a Secret's data holds them)."""
    forms = {v: [v, base64.b64encode(v.encode()).decode()] for v in CANARY_VALUES}
    return [value for value, spelled in forms.items() if any(s in text for s in spelled)]


def secret(name: str, namespace: str, endpoint: str) -> dict:
    data = {**CANARIES[name], "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": encoded,
    }


@pytest.fixture
def operator_logging_at_debug(caplog) -> Iterator[None]:
    """Logging as `kubetune operator --log-level DEBUG` sets it up (chart value logLevel), every
    record captured; the loggers it changes are put back afterwards."""
    saved = {name: logging.getLogger(name).level for name in CREDENTIAL_LOGGERS}
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


async def set_training_state(api: ApiServer, name: str, state: str, message: str = "") -> None:
    conditions = [
        {"type": "Created", "status": "True", "reason": "Created"},
        {"type": state, "status": "True", "reason": f"PyTorchJob{state}", "message": message},
    ]
    await api.patch_status("PyTorchJob", TEAM, name, {"conditions": conditions})


@pytest.mark.asyncio
async def test_canary_credentials_stay_in_their_secrets(
    apiserver, s3_endpoint, caplog, operator_logging_at_debug, figures
):
    bucket = models_bucket()
    make_bucket("sec-out")
    s3 = boto3.client("s3")
    await apiserver.create_namespace(PLATFORM)
    await apiserver.create_namespace(TEAM)
    await apiserver.create(secret("model-store", PLATFORM, s3_endpoint))  # the hub reads with it
    for name in CANARIES:  # the pods read with these: envFrom in the job's namespace
        await apiserver.create(secret(name, TEAM, s3_endpoint))
    curated = hub(
        "curated",
        PLATFORM,
        bucket,
        sharedWith={"namespaces": [TEAM]},
        storage={"secretRef": {"name": "model-store"}},
    )
    gone = {"modelId": "gone", "source": "s3://sec-no-such-bucket/llama/"}
    curated["spec"]["models"].append(gone)
    stores = {
        "data": {"train": "s3://sec-data/train/", "secretRef": {"name": "data-store"}},
        "output": {"uri": "s3://sec-out/bot/", "secretRef": {"name": "artifact-store"}},
    }

    async with operator(apiserver):
        await apiserver.create(curated, **STRICT)
        await apiserver.create(job("bot", TEAM, "curated", PLATFORM, **stores), **STRICT)
        crash = {**stores, "output": {**stores["output"], "uri": "s3://sec-out/crash/"}}
        await apiserver.create(job("crash", TEAM, "curated", PLATFORM, **crash), **STRICT)
        # Failure messages that come from S3, read with the Secrets' credentials.
        unreadable = {**stores, "data": {**stores["data"], "train": "s3://sec-no-such-bucket/x/"}}
        await apiserver.create(job("unreadable", TEAM, "curated", PLATFORM, **unreadable))
        gone_job = job("gone-model", TEAM, "curated", PLATFORM, **stores)
        gone_job["spec"]["model"]["modelId"] = "gone"
        await apiserver.create(gone_job, **STRICT)

        # bot: the whole lifecycle, progress and metrics read with the output Secret.
        await apiserver.wait_for("PyTorchJob", TEAM, "bot")
        # The hub's model reaches the pods as presigned URLs, signed with its Secret.
        urls_secret = await apiserver.get("Secret", TEAM, "bot-model-urls")
        urls = json.loads(base64.b64decode(urls_secret["data"]["urls.json"]))
        progress = {"epoch": 1, "step": 5, "total_steps": 10, "percent": 50, "train_loss": 2.0}
        s3.put_object(Bucket="sec-out", Key="bot/progress.json", Body=json.dumps(progress))
        await set_training_state(apiserver, "bot", "Running")
        running = lambda o: (o.get("status") or {}).get("progress")  # noqa: E731
        await apiserver.wait_for("ftj", TEAM, "bot", running, 10)
        epoch = {"epoch": 1, "train_loss": 1.0, "eval_loss": 1.1, "eval_perplexity": 3.0}
        final = {**epoch, "best_epoch": 1, "tokens_per_second": 10.0, "train_tokens": 100,
                 "train_seconds": 10.0, "padding_fraction": 0.0, "steps": 10, "world_size": 1,
                 "epochs": [epoch]}  # fmt: skip
        s3.put_object(Bucket="sec-out", Key="bot/metrics.json", Body=json.dumps(final))
        s3.put_object(Bucket="sec-out", Key="bot/MANIFEST.json", Body=b"{}")
        await set_training_state(apiserver, "bot", "Succeeded")
        await apiserver.wait_for("ftj", TEAM, "bot", phase("Succeeded"), 10)
        # crash: training fails.
        await apiserver.wait_for("PyTorchJob", TEAM, "crash")
        await set_training_state(apiserver, "crash", "Failed", "pod crash-master-0 exited 1")
        await apiserver.wait_for("ftj", TEAM, "crash", phase("Failed"), 10)
        # unreadable and gone-model wait, with messages from S3.
        unreadable = await apiserver.wait_for(
            "ftj", TEAM, "unreadable", has_reason("DataNotReadable"), 10
        )
        await apiserver.wait_for("ftj", TEAM, "gone-model", has_reason("ModelNotReady"), 10)
        await asyncio.sleep(1)  # timer rounds: progress and outputs read again
        stored = [
            obj
            for resource in apiserver.emulator.resources
            for obj in apiserver.emulator.objects(resource)
            if obj.get("kind") != "Secret"
        ]

    assert "no such bucket" in next(
        c["message"] for c in conditions(unreadable) if c["reason"] == "DataNotReadable"
    )
    # The PyTorchJobs take credentials from the Secrets by reference only; the hub's Secret
    # is none of them (its model comes as presigned URLs).
    pytorchjobs = [o for o in stored if o.get("kind") == "PyTorchJob"]
    assert {p["metadata"]["name"] for p in pytorchjobs} == {"bot", "crash"}
    for pytorchjob in pytorchjobs:
        for replica in pytorchjob["spec"]["pytorchReplicaSpecs"].values():
            (container,) = replica["template"]["spec"]["containers"]
            assert all(set(e) == {"name", "value"} for e in container["env"]), container["env"]
            assert {(e["prefix"], e["secretRef"]["name"]) for e in container["envFrom"]} == {
                (SECRET_PREFIXES[channel], name)
                for channel, name in (("data", "data-store"), ("output", "artifact-store"))
            }
    # The URLs' Secret holds no key of the hub's: only URLs, each carrying its signature (and,
    # as SigV4 does, the key id and the session token; the secret key never).
    model_keys = CANARIES["model-store"]
    assert model_keys["AWS_SECRET_ACCESS_KEY"] not in json.dumps(urls)
    signatures = {parse_qs(urlsplit(f["url"]).query)["X-Amz-Signature"][0] for f in urls["files"]}
    assert len(signatures) == len(urls["files"]) == 1

    # Everything the operator wrote (every object but the Secrets: statuses, Events,
    # ConfigMaps, PyTorchJobs, peering) and every log record, at DEBUG. The S3 server's own
    # records (werkzeug, moto) are the stand-in for AWS, not ours.
    ours = [r for r in caplog.records if not r.name.startswith(("werkzeug", "moto"))]
    places = {
        f"{o['kind']} {o['metadata'].get('namespace')}/{o['metadata']['name']}": json.dumps(o)
        for o in stored
    }
    places |= {
        f"log record {i} ({r.name})": f"{r.getMessage()} {r.exc_text or ''}"
        for i, r in enumerate(ours)
    }
    hits = {place: canary_hits(text) for place, text in places.items() if canary_hits(text)}
    hits |= {place: ["a model URL's signature"] for place, text in places.items()
             if any(s in text for s in signatures) or "X-Amz-Signature" in text}  # fmt: skip
    assert {o["kind"] for o in stored} >= {
        "FineTuneJob",
        "ModelHub",
        "Event",
        "ConfigMap",
        "PyTorchJob",
    }
    assert sum(r.levelno == logging.DEBUG for r in ours) > 100  # DEBUG was on
    assert hits == {}
    figures.record("API objects grepped for canaries (all but the Secrets)", len(stored))
    figures.record("operator log records grepped for canaries (DEBUG)", len(ours))
    figures.add("canary hits", len(hits))


LOCAL_HYPERPARAMETERS = {
    "instruction_tuned": True,
    "epoch": 1,
    "max_input_length": 32,
    "per_device_train_batch_size": 4,
    "merge_weights": False,
    "checkpoint_interval_steps": 0,
}


def kubetune_run_local(root: Path, name: str, train: str) -> list[str]:
    """`kubetune run JOB --local -v` for a job training on `train`, output to S3."""
    job_file = root / f"{name}.yaml"
    job_file.write_text(yaml.safe_dump({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {"model": {"hubRef": {"name": "local"}, "modelId": "tiny"},
                 "data": {"train": train}, "hyperparameters": LOCAL_HYPERPARAMETERS,
                 "output": {"uri": f"s3://sec-local/out/{name}/"}},
    }))  # fmt: skip
    hub_file, scratch = root / "hub.yaml", root / "scratch"
    return [sys.executable, "-m", "kubetune.cli.main", "run", str(job_file),
            "--hub", str(hub_file), "--local", "-v", "--scratch", str(scratch)]  # fmt: skip


def trainer_as_a_pod(root: Path, train: str) -> list[str]:
    """The trainer's command in a pod, with a TrainerConfig as the operator renders one."""
    config = root / "pod-config.json"
    config.write_text(json.dumps({
        "job": {"name": "pod", "namespace": TEAM, "uid": "uid-pod"},
        "model": {"modelId": "tiny", "source": f"file://{root}/model"},
        "data": {"train": train},
        "hyperparameters": Hyperparameters(**LOCAL_HYPERPARAMETERS).model_dump(),
        "output": {"uri": f"file://{root}/pod-out"},
    }))  # fmt: skip
    return [sys.executable, "-m", "kubetune_trainer.train", "--config", str(config)]


def test_canaries_never_reach_local_runs_or_the_trainer_output(tmp_path, s3_endpoint, figures):
    """Credentials in the environment of `kubetune run --local` (AWS_*, as a user has them) and
    of the trainer (KUBETUNE_DATA_AWS_*, as a pod gets them from the data Secret): a run that
    trains, and runs whose data bucket does not exist. Nothing they print or write names them."""
    root = make_job(tmp_path, samples=24)
    make_bucket("sec-local")
    s3 = boto3.client("s3")
    for name in ("train.jsonl", "template.json"):
        s3.put_object(
            Bucket="sec-local", Key=f"data/{name}", Body=(root / "data" / name).read_bytes()
        )
    hub_doc = hub("local", "default", "unused")
    hub_doc["spec"]["models"] = [{"modelId": "tiny", "source": f"file://{root}/model"}]
    (root / "hub.yaml").write_text(yaml.safe_dump(hub_doc))
    values = CANARIES["data-store"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBETUNE_"))}
    base |= {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    region = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    user_env = {**base, **values, **region}
    pod_env = {**base, "KUBETUNE_SCRATCH": str(root / "pod-scratch")}
    pod_env |= {f"KUBETUNE_DATA_{k}": v for k, v in {**values, **region}.items()}
    runs = {  # side by side: each is mostly the trainer's imports
        "trains": (kubetune_run_local(root, "trains", "s3://sec-local/data/"), user_env),
        "no-bucket": (kubetune_run_local(root, "no-bucket", "s3://sec-none/data/"), user_env),
        "pod": (trainer_as_a_pod(root, "s3://sec-none/train/"), pod_env),
    }
    started = {
        name: subprocess.Popen(args, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        for name, (args, env) in runs.items()
    }  # fmt: skip
    done = {name: (p, *p.communicate(timeout=400)) for name, p in started.items()}

    assert done["trains"][0].returncode == 0, done["trains"][2][-3000:]
    assert done["no-bucket"][0].returncode == 2, done["no-bucket"][2][-3000:]
    assert "no such bucket" in done["no-bucket"][2].splitlines()[-1]
    assert done["pod"][0].returncode == 2 and "no such bucket" in done["pod"][2]
    places = {
        f"{name} {stream}": text
        for name, (_, out, err) in done.items()
        for stream, text in (("stdout", out), ("stderr", err))
    }
    for folder in ("scratch", "pod-scratch", "pod-out"):  # configs, trainer logs, claims
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in (".json", ".log", ".txt", ".yaml"):
                places[str(path.relative_to(root))] = path.read_text(errors="replace")
    listed = s3.list_objects_v2(Bucket="sec-local", Prefix="out/").get("Contents", [])
    for obj in listed:  # the artifacts: progress, metrics, manifest, adapter config, curve
        if not obj["Key"].endswith((".safetensors", ".png", ".pt", ".bin")):
            body = s3.get_object(Bucket="sec-local", Key=obj["Key"])["Body"].read()
            places[f"s3://sec-local/{obj['Key']}"] = body.decode(errors="replace")
    assert any(place.endswith("trains/MANIFEST.json") for place in places)
    hits = {place: canary_hits(text) for place, text in places.items() if canary_hits(text)}
    assert hits == {}
    figures.record("local-run and trainer outputs and files grepped for canaries", len(places))
    figures.add("canary hits", len(hits))


def test_presigned_model_urls_never_reach_the_trainer_output(tmp_path, seaweed, figures):
    """A pod of a presigned hub's job: the model from the operator's URLs (SeaweedFS checks
    them), data and output with the team's own keys, at DEBUG. Neither the hub's secret key nor
    any URL's signature is in what it prints or writes; an expired URL fails in one line."""
    root = make_job(tmp_path, samples=24)
    hub_s3, team_s3 = seaweed.client("hub"), seaweed.client("team")
    hub_s3.create_bucket(Bucket="sec-presigned-models")
    for path in (root / "model").iterdir():
        hub_s3.upload_file(str(path), "sec-presigned-models", f"tiny/{path.name}")
    team_s3.create_bucket(Bucket="sec-presigned-team")
    for name in ("train.jsonl", "template.json"):
        team_s3.upload_file(str(root / "data" / name), "sec-presigned-team", f"data/{name}")
    hub_keys = seaweed.credentials("hub")
    signing = {"aws_access_key_id": hub_keys["AWS_ACCESS_KEY_ID"], "region_name": "us-east-1",
               "aws_secret_access_key": HUB_SECRET, "endpoint_url": seaweed.endpoint}  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    source = "s3://sec-presigned-models/tiny/"
    documents = {"fresh": sign_model(source, signing, 600, now),
                 "expired": sign_model(source, signing, 1, now)}  # fmt: skip
    signatures = {parse_qs(urlsplit(f.url).query)["X-Amz-Signature"][0]
                  for d in documents.values() for f in d.files}  # fmt: skip
    time.sleep(2)  # the second set is past its lifetime
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBETUNE_"))}
    base |= {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "KUBETUNE_LOG_LEVEL": "DEBUG"}  # fmt: skip
    team = seaweed.credentials("team")
    for channel in ("DATA", "OUTPUT"):
        base |= {f"KUBETUNE_{channel}_{k}": v for k, v in team.items()}
    started = {}
    for name, document in documents.items():
        folder = root / name
        folder.mkdir()
        urls = folder / "urls.json"
        urls.write_text(document.model_dump_json(by_alias=True))
        config = folder / "config.json"
        config.write_text(json.dumps({
            "job": {"name": name, "namespace": TEAM, "uid": f"uid-{name}"},
            "model": {"modelId": "tiny", "source": source},
            "data": {"train": "s3://sec-presigned-team/data/"},
            "hyperparameters": Hyperparameters(**LOCAL_HYPERPARAMETERS).model_dump(),
            "output": {"uri": f"s3://sec-presigned-team/out/{name}/"},
        }))  # fmt: skip
        env = {**base, "KUBETUNE_SCRATCH": str(folder / "scratch"),
               "KUBETUNE_MODEL_URLS": str(urls)}  # fmt: skip
        command = [sys.executable, "-m", "kubetune_trainer.train", "--config", str(config)]
        started[name] = subprocess.Popen(command, cwd=REPO, env=env, text=True,
                                         stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)  # fmt: skip
    done = {name: (p, *p.communicate(timeout=400)) for name, p in started.items()}

    assert done["fresh"][0].returncode == 0, done["fresh"][2][-3000:]
    assert done["expired"][0].returncode == 2, done["expired"][2][-3000:]
    last = done["expired"][2].strip().splitlines()[-1]
    assert f"{source}config.json: presigned URL expired" in last, last
    places = {f"{name} {stream}": text for name, (_, out, err) in done.items()
              for stream, text in (("stdout", out), ("stderr", err))}  # fmt: skip
    for path in root.rglob("*"):  # scratch: downloads' markers, claims, the trainer's files
        texts = (".json", ".log", ".txt", ".yaml", ".kubetune-complete")
        if path.is_file() and path.suffix in texts and path.name != "urls.json":  # not the Secret
            places[str(path.relative_to(root))] = path.read_text(errors="replace")
    for obj in team_s3.list_objects_v2(Bucket="sec-presigned-team", Prefix="out/")["Contents"]:
        if not obj["Key"].endswith((".safetensors", ".png", ".pt", ".bin")):
            body = team_s3.get_object(Bucket="sec-presigned-team", Key=obj["Key"])["Body"].read()
            places[f"s3://sec-presigned-team/{obj['Key']}"] = body.decode(errors="replace")
    assert any(place.endswith("fresh/MANIFEST.json") for place in places), sorted(places)
    hits = {place: [s for s in (*signatures, HUB_SECRET, "X-Amz-Signature") if s in text]
            for place, text in places.items()}  # fmt: skip
    hits = {place: found for place, found in hits.items() if found}
    assert hits == {}
    figures.record("presigned-model trainer outputs and files grepped for URLs", len(places))
    figures.add("canary hits", len(hits))


# ----- what a cluster reads, and where downloads land --------------------------------------

# Refused by the CRD (422): not s3://, and not file:/// either.
FOREIGN_URIS = [
    "http://datasets.example.com/train/",
    "https://sec-data.s3.amazonaws.com/train/",
    "ftp://files.example.com/train/",
    "gs://sec-data/train/",
    "hdfs://namenode/train/",
    "data/train/",  # relative
    "/data/train/",  # a path, no scheme
    "../train/",
    "file://relative/train/",  # file:// needs an absolute path: file:///...
    "s3:/sec-data/train/",
    "S3://sec-data/train/",
    "s3://sec-data/train/ oops",
    "",
]
# Accepted by the CRD (valid for local mode), refused by the operator (LocalUriInCluster).
LOCAL_URIS = {
    "data.train": "file:///data/train.jsonl",
    "data.validation": "file:///data/val/",
    "output.uri": "file:///tmp/out/",
}


@pytest.mark.asyncio
async def test_a_cluster_reads_only_s3_uris(apiserver, s3_endpoint, figures):
    bucket = models_bucket()
    await apiserver.create_namespace(PLATFORM)
    await apiserver.create_namespace(TEAM)
    refused_by_crd = 0
    async with operator(apiserver):
        curated = hub("curated", PLATFORM, bucket, sharedWith={"namespaces": [TEAM]})
        curated["spec"]["models"].append({"modelId": "on-disk", "source": "file:///models/x/"})
        await apiserver.create(curated, **STRICT)
        for i, uri in enumerate(FOREIGN_URIS):
            for where in ("data.train", "data.validation", "output.uri"):
                body = job(f"foreign-{i}", TEAM, "curated", PLATFORM)
                section, key = where.split(".")
                body["spec"][section][key] = uri
                with pytest.raises(ApiError) as error:
                    await apiserver.create(body, **STRICT)
                assert error.value.status == 422 and f"spec.{where}" in error.value.message
                refused_by_crd += 1
            bad_hub = hub(f"foreign-{i}", PLATFORM, bucket)
            bad_hub["spec"]["models"][0]["source"] = uri
            with pytest.raises(ApiError) as error:
                await apiserver.create(bad_hub, **STRICT)
            assert error.value.status == 422 and "spec.models[0].source" in error.value.message
            refused_by_crd += 1
        for i, (where, uri) in enumerate(LOCAL_URIS.items()):
            body = job(f"local-{i}", TEAM, "curated", PLATFORM)
            section, key = where.split(".")
            body["spec"][section][key] = uri
            await apiserver.create(body, **STRICT)
        on_disk = job("on-disk", TEAM, "curated", PLATFORM)
        on_disk["spec"]["model"]["modelId"] = "on-disk"
        await apiserver.create(on_disk, **STRICT)
        outcomes = [
            await apiserver.wait_for("ftj", TEAM, f"local-{i}", phase("Failed"))
            for i in range(len(LOCAL_URIS))
        ]
        waiting = await apiserver.wait_for("ftj", TEAM, "on-disk", has_reason("ModelNotReady"))
        assert await apiserver.list("PyTorchJob", TEAM) == []

    for ftj, uri in zip(outcomes, LOCAL_URIS.values(), strict=True):
        failed = next(c for c in conditions(ftj) if c["type"] == "Failed")
        assert failed["reason"] == "LocalUriInCluster" and uri in failed["message"]
    message = next(c["message"] for c in conditions(waiting) if c["reason"] == "ModelNotReady")
    assert "file:///models/x/: only s3:// sources can be used in a cluster" in message
    figures.record(
        "URIs refused in a cluster (CRD 422 + operator)", refused_by_crd + len(LOCAL_URIS) + 1
    )


# Object keys under the prefix a channel names; each would land outside the download folder
# (or is no file name at all). A good key sits beside each: nothing may be written anyway.
ESCAPING_KEYS = [
    "../escape.txt",
    "../../escape.txt",
    "a/../../escape.txt",
    "a/b/../../../escape.txt",
    "/escape.txt",  # the prefix, then an absolute path
    "//tmp/escape.txt",
    "a//escape.txt",
    "./escape.txt",
    "a/./escape.txt",
    "..",
    "a/..",
    "..\\escape.txt",
    "a\\..\\..\\escape.txt",
]


def test_object_keys_cannot_escape_the_download_folder(tmp_path, s3_endpoint, figures):
    bucket = make_bucket()
    store = open_store("s3://")
    for i, key in enumerate(ESCAPING_KEYS):
        seed_objects(bucket, {f"case-{i}/ok.txt": b"fine", f"case-{i}/{key}": b"escaped"})
        dest = tmp_path / f"case-{i}" / "deep" / "data"
        with pytest.raises(StorageError) as error:
            store.download_dir(f"s3://{bucket}/case-{i}/", dest)
        assert f"refusing object key {key!r}" in str(error.value)
        assert not dest.exists()  # all keys are checked before the first byte is written
    # No escape.txt anywhere (nor ok.txt): at most the download's lock files were written.
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".kubetune-lock"]
    assert written == [] and not Path("/tmp/escape.txt").exists(), written
    figures.record("object keys refused by the trainer's download", len(ESCAPING_KEYS))


# Placeholders that str.format would resolve to attributes, items or formatted objects.
UNSAFE_PLACEHOLDERS = [
    "{instruction.__class__}",
    "{instruction.__class__.__mro__}",
    "{instruction.__init__.__globals__}",
    "{instruction.upper}",
    "{instruction[0]}",
    "{instruction[__class__]}",
    "{record[secret]}",
    "{0}",
    "{0.__class__}",
    "{}",
    "{instruction!r}",
    "{instruction!a}",
    "{instruction!s}",
    "{instruction:>99999}",
    "{instruction:{context}}",
    "{instruction.__dict__[x]}",
]


def test_template_placeholders_reach_only_record_fields(figures):
    for placeholder in UNSAFE_PLACEHOLDERS:
        with pytest.raises(DataError, match="unsafe placeholder"):
            parse_format(f"Task: {placeholder}", "template.json: prompt")
    # A record's values are inserted as they are: braces in them are not a second template.
    template = Template(parse_format("{instruction}", "p"), parse_format(" {response}", "c"), None)
    record = {"instruction": "{response.__class__} {0}", "response": "{instruction!r}"}
    assert template.render(record, "line 1") == ("{response.__class__} {0}", " {instruction!r}")
    figures.record("unsafe template placeholders refused", len(UNSAFE_PLACEHOLDERS))


# ----- pods and RBAC -----------------------------------------------------------------------

RENDERED = {
    "cpu": {"accelerator": "none", "cpu": 4, "memory": "16Gi"},
    "nvidia": {"accelerator": "nvidia", "acceleratorsPerNode": 4},
    "neuron": {"accelerator": "neuron", "acceleratorsPerNode": 16},
    "trainium-instance": {"instanceType": "trn1.32xlarge"},
    "multinode": {"accelerator": "nvidia", "acceleratorsPerNode": 8, "nodes": 4},
}


def rendered_pods(resources: dict) -> list[dict]:
    hub_body = hub("curated", TEAM, "models", storage={"secretRef": {"name": "model-store"}})
    body = job(
        "bot",
        TEAM,
        "curated",
        TEAM,
        resources=resources,
        data={"train": "s3://data/train/", "secretRef": {"name": "data-store"}},
        output={"uri": "s3://out/bot/", "secretRef": {"name": "artifact-store"}},
    )
    config = OperatorConfig(trainerServiceAccount="fine-tuner")
    resolved = plan(
        FineTuneJob.model_validate(body),
        "uid-1",
        FileHubs([ModelHub.model_validate(hub_body)]),
        config,
        require_ready=False,
    )
    owner = {"name": "bot", "uid": "uid-1"}
    assert "AWS" not in json.dumps(render_configmap(resolved, owner))  # names and URIs only
    pytorchjob = render_pytorchjob(resolved, config, owner)
    return [r["template"]["spec"] for r in pytorchjob["spec"]["pytorchReplicaSpecs"].values()]


def assert_locked_down(pod: dict, where: str) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, where
    assert pod["securityContext"].get("runAsUser", 1) != 0, where
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), (where, flag)
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v], where
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where  # nothing added back
        assert context.get("privileged") in (None, False), where
        assert context.get("runAsUser", 1) != 0, where


def test_pods_run_unprivileged_and_rbac_has_no_wildcards(figures):
    checked = 0
    for case, resources in RENDERED.items():
        for pod in rendered_pods(resources):
            assert_locked_down(pod, f"trainer pod ({case})")
            checked += 1
    for values in (DEFAULT, ALL):
        docs = objects(rendered(*values))
        assert_locked_down(one(docs, "Deployment")["spec"]["template"]["spec"], "operator")
        checked += 1
        for role in find(docs, "ClusterRole") + find(docs, "Role"):
            for rule in role["rules"]:
                for part in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[part], (role["metadata"]["name"], rule)
                if "secrets" in rule["resources"]:  # read one by name, never list them all;
                    # write only each job's own Secret of model URLs (controller/model_access)
                    assert rule["verbs"] == ["get", "create", "patch", "delete"], rule
    figures.record("pod templates checked unprivileged (trainer and operator)", checked)
