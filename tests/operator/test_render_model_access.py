"""How a hub's storage.access shapes a job's plan and pods: which Secrets the pods name, the
model URLs' Secret and its mount; and the limits of the URLs' lifetime settings."""

import copy

import pytest
from pydantic import ValidationError

from kubetune.config import OperatorConfig
from kubetune.render.model_access import PLACEHOLDER, render_model_urls_secret
from kubetune.render.pytorchjob import render_pytorchjob
from kubetune.render.trainjob import render_trainjob
from tests.operator.test_render import patched_pod
from tests.operator.test_resolve import HUB, PUBLIC, job, resolve

OWNER = {"name": "bot", "uid": "uid-1"}
MOUNT = "/var/run/secrets/kubetune/model"


def with_storage(**storage) -> dict:
    hub = copy.deepcopy(HUB)
    hub["spec"]["storage"] = storage
    return hub


@pytest.mark.parametrize(
    "storage, access, secrets",
    [
        ({"secretRef": {"name": "model-store"}}, "presigned", {"data", "output"}),
        ({"secretRef": {"name": "model-store"}, "access": "secret"}, "secret",
         {"model", "data", "output"}),
        ({"secretRef": {"name": "model-store"}, "access": "podIdentity"}, "podIdentity",
         {"data", "output"}),
        ({}, "podIdentity", {"data", "output"}),
        ({"access": "presigned"}, "presigned", {"data", "output"}),  # signed by the operator
    ],
)  # fmt: skip
def test_the_hubs_access_decides_which_secrets_the_pods_name(storage, access, secrets):
    plan = resolve(job(), with_storage(**storage), PUBLIC)
    assert plan.model_access == access
    assert set(plan.secrets) == secrets


def test_a_referenced_model_is_read_as_the_hub_that_lists_its_source_says():
    public = copy.deepcopy(PUBLIC)
    public["spec"]["storage"] = {"secretRef": {"name": "public-store"}, "access": "secret"}
    plan = resolve(job(model="qwen"), HUB, public)
    assert plan.model_access == "secret" and plan.secrets["model"] == "public-store"


def test_presigned_pods_mount_the_urls_and_name_no_model_secret():
    plan = resolve(job())
    pj = render_pytorchjob(plan, OperatorConfig(), OWNER)
    for replica in pj["spec"]["pytorchReplicaSpecs"].values():
        spec = replica["template"]["spec"]
        [container] = spec["containers"]
        mount = {"name": "model-urls", "mountPath": MOUNT, "readOnly": True}
        assert mount in container["volumeMounts"]
        volume = {"name": "model-urls",
                  "secret": {"secretName": "bot-model-urls", "defaultMode": 0o440}}  # fmt: skip
        assert volume in spec["volumes"]
        assert "model-store" not in str(container)
        urls = {"name": "KUBETUNE_MODEL_URLS", "value": f"{MOUNT}/urls.json"}
        assert urls in container["env"]
    tj = render_trainjob(plan, OperatorConfig(), OWNER)
    pod = patched_pod(tj)
    assert "model-urls" in {v["name"] for v in pod["spec"]["volumes"]}
    assert "KUBETUNE_MODEL_URLS" in {e["name"] for e in tj["spec"]["trainer"]["env"]}
    assert "model-store" not in str(tj)


def test_other_access_modes_mount_nothing():
    for storage in ({"secretRef": {"name": "model-store"}, "access": "secret"}, {}):
        pj = render_pytorchjob(resolve(job(), with_storage(**storage), PUBLIC), OperatorConfig(),
                               OWNER)  # fmt: skip
        assert "model-urls" not in str(pj) and "KUBETUNE_MODEL_URLS" not in str(pj)


def test_the_secret_as_render_shows_it_has_a_name_and_a_key_and_no_value():
    body = render_model_urls_secret(resolve(job()), OWNER, None)
    assert body["metadata"]["name"] == "bot-model-urls"
    assert body["metadata"]["labels"] == {"kubetune.io/finetunejob": "bot"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert body["metadata"]["annotations"] == {"kubetune.io/model-source": "s3://models/llama/"}
    assert body["stringData"] == {"urls.json": PLACEHOLDER}


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"lifetimeSeconds": 604801}, "less than or equal to 604800"),
        ({"lifetimeSeconds": 3600, "refreshMarginSeconds": 3600}, "must be less than"),
        ({"refreshMarginSeconds": 2}, "greater than or equal to 5"),
    ],
)
def test_url_lifetime_settings_are_checked(settings, problem):
    with pytest.raises(ValidationError, match=problem):
        OperatorConfig.model_validate({"presignedUrls": settings})
    defaults = OperatorConfig().presigned_urls
    assert (defaults.lifetime_seconds, defaults.refresh_margin_seconds) == (86400, 43200)
