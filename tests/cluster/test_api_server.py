"""Our CRDs on a real kube-apiserver: accepted (structural schema, CEL cost), `kubectl explain`
and printer columns, and the same verdict as pydantic for every manifest of the API corpus and
every update of a stored FineTuneJob. Where the real server and our emulation disagree, the real
one wins: these tests fail, and the product follows it."""

import copy
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune.api.manifests import Document, problems, prune_nulls
from kubetune.api.v1alpha1 import GROUP, VERSION
from tests.support.corpus import EXAMPLE_JOB, INVALID, UPDATES, VALID, expected_field, load
from tests.support.processes import free_port

pytestmark = pytest.mark.cluster
PLURALS = {"FineTuneJob": "finetunejobs", "ModelHub": "modelhubs"}
NAMESPACE = "team-a"


def kubectl(plane, *args: str) -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("needs kubectl on PATH")
    done = subprocess.run(
        [found, f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def api(kube_apiserver) -> client.CustomObjectsApi:
    core = client.CoreV1Api(kube_apiserver.api_client())
    for name in (NAMESPACE, "ml-platform"):
        try:
            core.create_namespace({"metadata": {"name": name}})
        except ApiException as err:
            if err.status != 409:
                raise
    return client.CustomObjectsApi(kube_apiserver.api_client())


def server_verdict(api: client.CustomObjectsApi, body: dict) -> list[str]:
    """What the API server says to a create, as kubectl apply sends it (strict fields), without
    storing anything (server-side dry run): [] when accepted, else its causes."""
    body = copy.deepcopy(body)
    namespace = body.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[body["kind"]], body,
            dry_run="All", field_validation="Strict",
        )  # fmt: skip
    except ApiException as err:
        details = json.loads(err.body or "{}")
        causes = (details.get("details") or {}).get("causes") or []
        found = [f"{c.get('field', '')}: {c.get('message', '')}" for c in causes]
        return found or [details.get("message") or f"{err.status} {err.reason}"]
    return []


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_real_server_and_pydantic_agree(api, path):
    doc = load(path)
    found = {"kubetune validate": problems(doc), "kube-apiserver": server_verdict(api, doc.body)}
    verdicts = {side: "valid" if not lines else "invalid" for side, lines in found.items()}
    assert verdicts == dict.fromkeys(found, path.parent.name), f"{path.name}: {found}"
    if path.parent.name == "invalid":
        field = expected_field(path)
        if field == "metadata.namespace":  # no such namespace can exist: the server says 404
            namespace = doc.body["metadata"]["namespace"]
            assert found["kube-apiserver"] == [f'namespaces "{namespace}" not found']
            found.pop("kube-apiserver")
        for side, lines in found.items():
            assert any(field in line for line in lines), f"{side} does not name {field}: {lines}"


@pytest.mark.parametrize(
    ("before", "change", "field"), [u[1:] for u in UPDATES], ids=[u[0] for u in UPDATES]
)
def test_immutability_on_real_updates(api, before, change, field, request):
    """Transition rules (CEL `oldSelf`) as the server applies them to a real replace."""
    stored = prune_nulls(load(EXAMPLE_JOB).body)
    stored["metadata"] = {"name": f"upd-{abs(hash(request.node.name)) % 10**8}"}
    if before:
        before(stored["spec"])
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "finetunejobs", stored
    )
    updated = copy.deepcopy(created)
    change(updated["spec"])
    assert problems(Document("new", 0, updated)) == []
    name = created["metadata"]["name"]
    try:
        api.replace_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "finetunejobs", name, updated
        )
        refused = None
    except ApiException as err:
        refused = err
    finally:
        api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "finetunejobs", name)
    if field is None:
        assert refused is None, refused and refused.body
    else:
        assert refused is not None and refused.status == 422, f"{field} could change"
        assert field in refused.body and "create a new FineTuneJob instead" in refused.body


def test_kubectl_explain_prints_our_descriptions(kube_apiserver):
    text = kubectl(kube_apiserver, "explain", "finetunejob.spec.hyperparameters")
    assert "lora_r" in text and "LoRA rank" in text
    text = kubectl(kube_apiserver, "explain", "modelhub.spec.models.eula")
    assert "version" in text


def test_kubectl_get_shows_the_printer_columns(api, kube_apiserver):
    job = prune_nulls(load(EXAMPLE_JOB).body)
    job["metadata"] = {"name": "columns", "namespace": NAMESPACE}
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "finetunejobs", job)
    try:
        header = kubectl(kube_apiserver, "get", "ftj", "-n", NAMESPACE).splitlines()[0].split()
        assert header[:4] == ["NAME", "PHASE", "MODEL", "PROGRESS"], header
        wide = kubectl(kube_apiserver, "get", "ftj", "-n", NAMESPACE, "-o", "wide")
        assert {"HUB", "EVAL-LOSS", "ETA"} <= set(wide.splitlines()[0].split())
        listed = kubectl(kube_apiserver, "get", "kubetune", "-A")  # the category
        assert "finetunejob.kubetune.io/columns" in listed
    finally:
        api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "finetunejobs", "columns")


def test_operator_without_peering_crds_says_so_and_runs_alone(kube_apiserver, tmp_path):
    """A checkout's operator on a cluster without the chart: not silent, and it works."""
    log = tmp_path / "operator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    operator = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli.main", "operator",
         "--metrics-port", str(free_port()), "--health-port", str(free_port())],
        env={**env, "KUBECONFIG": str(kube_apiserver.kubeconfig)},
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "no kopf peering CRDs" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    text = log.read_text()
    assert "WARNING no kopf peering CRDs (kopf.dev) on this cluster" in text, text[-2000:]
    assert "install the chart (helm install kubetune charts/kubetune)" in text
    assert "--standalone" in text
