"""A Kubernetes API server over real HTTP for integration tests: our CRDs enforced as the API
server enforces them (422 with causes), kopf run in the test's loop, kubectl pointed at it.

    from tests.support.apiserver import apiserver_fixture, run_operator  # noqa: F401

    async def test_reconcile(apiserver):            # pytestmark = pytest.mark.asyncio
        registry = kopf.OperatorRegistry()
        ...                                         # @kopf.on.create(..., registry=registry)
        await apiserver.create_namespace("team-a")  # namespaced objects need it, as for real
        async with run_operator(apiserver, registry, namespaces=["team-a"]):
            await apiserver.create(job)
            await apiserver.wait_for("ConfigMap", "team-a", "job-config")

API semantics, and what is not emulated, are in apiserver_fidelity.py; kubectl in kubeconfig.py.
"""

import asyncio
import contextlib
import contextvars
import copy
import functools
import json
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest_asyncio
import yaml
from openapi_schema_validator import OAS30Validator

from tests.support.apiserver_fidelity import NAMESPACES, ApiCall, FidelityEmulator, Obj
from tests.support.apiserver_rules import CrdValidator
from tests.support.kubeconfig import jsonpath, kubectl, table_renderer, write_kubeconfig
from tests.support.upstream import pytorchjob_crd

ROOT = Path(__file__).resolve().parents[2]
OUR_CRDS = sorted((ROOT / "crds").glob("*.yaml"))
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
MERGE_PATCH = "application/merge-patch+json"
Objs = list[Obj]  # a name for `list[...]` that the `list` method below does not shadow

__all__ = ["ApiCall", "ApiError", "ApiServer", "apiserver_fixture", "jsonpath", "run_operator"]


# ----- the kinds served, and their schemas -----------------------------------------------------


@functools.cache
def _load(path: Path) -> Obj:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _peering_crd(kind: str, plural: str, scope: str) -> Obj:
    """kopf's peering CRDs (kopf docs, "Peering"): free-form objects it keeps heartbeats in."""
    return _free_form_crd("kopf.dev", kind, plural, scope, status=False)


def _free_form_crd(
    group: str, kind: str, plural: str, scope: str = "Namespaced", status: bool = True
) -> Obj:
    """A CRD that accepts any object (PyTorchJob where its real CRD file is absent)."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
    if status:
        version["subresources"] = {"status": {}}
    names = {"kind": kind, "plural": plural, "singular": kind.lower()}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope, "names": names, "versions": [version]}}  # fmt: skip  # noqa: E501


def _storage_version(crd: Obj) -> Obj:
    return next(v for v in crd["spec"]["versions"] if v.get("storage", True))


def _register(emulator: FidelityEmulator, crd: Obj) -> kmock.resource:
    spec, version = crd["spec"], _storage_version(crd)
    names = spec["names"]
    resource = kmock.resource(spec["group"], version["name"], names["plural"])
    emulator.resources[resource] = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=spec["scope"] == "Namespaced",
        verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
        shortnames=names.get("shortNames", []),
        categories=names.get("categories", []),
        subresources=set(version.get("subresources", {})),
    )
    emulator.custom.add(resource)
    emulator.seed(CRDS, crd)  # discoverable as apiextensions.k8s.io objects, too
    return resource


def prune(value: Any, schema: Obj, path: str = "") -> list[str]:
    """Drop, in place, the fields a structural schema does not declare, as the API server
    does; returns their paths. The root `metadata` is the server's own and stays."""
    if not isinstance(value, dict | list) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, list):
        items = schema.get("items", {})
        return [p for i, item in enumerate(value) for p in prune(item, items, f"{path}[{i}]")]
    declared, extra, pruned = schema.get("properties") or {}, schema.get("additionalProperties"), []
    for key in [k for k in value if path or k != "metadata"]:
        child = f"{path}.{key}" if path else key
        if key in declared or isinstance(extra, dict):
            pruned += prune(value[key], declared.get(key, extra), child)
        else:
            del value[key]
            pruned.append(child)
    return pruned


class SchemaGate:
    """The API server's verdict on a write of one custom kind (its storage version)."""

    def __init__(self, crd: Obj) -> None:
        self.schema = _storage_version(crd)["schema"]["openAPIV3Schema"]
        try:  # ours: OAS 3.0 + CEL rules with transition rules (apiserver_rules.py)
            self.main, self.status = CrdValidator(crd), CrdValidator(_status_only(crd))
        except ValueError:  # third-party CRDs that CrdValidator is stricter on than Kubernetes
            self.main = self.status = None
            self.types = OAS30Validator(self.schema)  # types, enums, required, bounds

    def __call__(self, request: kmock.Request, old: Obj | None, new: Obj) -> list[str]:
        unknown = prune(new, self.schema)
        # kubectl asks for Strict field validation; other clients' unknown fields are pruned.
        strict = request.params.get("fieldValidation") == "Strict"
        problems = [f"{path}: field not declared in schema" for path in unknown if strict]
        if self.main is None:
            return problems + [_describe(e) for e in self.types.iter_errors(new)]
        if request.subresource == "status":  # held to the status schema only
            return problems + self.status.update_problems(old, _without_spec(new))
        if old is None:
            return problems + self.main.create_problems(new)
        return problems + self.main.update_problems(old, new)


def _status_only(crd: Obj) -> Obj:
    crd = copy.deepcopy(crd)
    schema = _storage_version(crd)["schema"]["openAPIV3Schema"]
    schema.pop("required", None)
    schema.pop("x-kubernetes-validations", None)
    schema["properties"] = _without_spec(schema.get("properties", {}))
    return crd


def _without_spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "spec"}


def _describe(error: Any) -> str:
    path = ".".join(str(part) for part in error.absolute_path) or "<root>"
    return f"{path}: Invalid value: {json.dumps(error.instance)[:80]}: {error.message[:200]}"


@functools.cache
def _gate(path: Path) -> SchemaGate:
    return SchemaGate(_load(path))  # CEL rules compile once per test session


def build_emulator(validate: bool = True, short_history: bool = False) -> FidelityEmulator:
    """Built-in kinds (kmock's bundle), our CRDs, PyTorchJob (if its CRD is there), kopf's
    peering kinds, and the namespaces every cluster has."""
    emulator = FidelityEmulator(short_history=short_history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # kmock's importlib.resources call
        # Without the built-ins kopf finishes discovery and then silently watches nothing.
        emulator.resources.load_bundled()
    gates, columns = {}, {}
    crd = pytorchjob_crd()
    optional = [crd] if crd else []  # from the pinned Training Operator module
    for path in OUR_CRDS + optional:
        resource = _register(emulator, _load(path))
        gates[resource] = _gate(path)
        columns[resource] = _storage_version(_load(path)).get("additionalPrinterColumns", [])
    if not optional:  # the kind is still served, unchecked: the operator creates PyTorchJobs
        _register(emulator, _free_form_crd("kubeflow.org", "PyTorchJob", "pytorchjobs"))
    _register(emulator, _peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"))
    _register(emulator, _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"))
    for name in ("default", "kube-system", "kube-public"):
        meta = {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
        emulator.seed(NAMESPACES, namespace | {"status": {"phase": "Active"}})
    if validate:
        emulator.admission = lambda request, old, new: (
            gates[request.resource](request, old, new) if request.resource in gates else []
        )
    emulator.render_table = table_renderer(columns)
    return emulator


# ----- the test's handle on a running server ---------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer; `.body` is the Kubernetes Status, `.reason` e.g. "Conflict"."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        self.message = body.get("message") if isinstance(body, dict) else str(body)
        self.reason = body.get("reason") if isinstance(body, dict) else None
        super().__init__(f"{status} {self.reason}: {self.message}")


class ApiServer:
    """A running server: its URL, a kubeconfig for it, the request log, and helpers over real
    HTTP. `kind` arguments take a kind, plural, singular or short name ("ftj")."""

    token, ca_file = "dummy", None  # it checks no credentials; plain HTTP

    def __init__(self, emulator: FidelityEmulator, url: str, kubeconfig: Path) -> None:
        self.emulator, self.url, self.kubeconfig = emulator, url, kubeconfig
        self.session = aiohttp.ClientSession(url, headers={"Authorization": "Bearer dummy"})

    @property
    def requests(self) -> list[ApiCall]:
        """(method, path, status, query) of every request; watches logged as they start."""
        return self.emulator.calls

    def resource(self, kind: str, api_version: str | None = None) -> kmock.resource:
        """The resource of a kind; the core group wins ties (Event: v1, not events.k8s.io)."""
        found = [
            r
            for r in self.emulator.resources
            for info in [self.emulator.resources[r]]
            if kind.lower()
            in {r.plural, (info.kind or "").lower(), info.singular, *info.shortnames}
            if api_version in (None, f"{r.group}/{r.version}".lstrip("/"))
        ]
        if not found:
            raise KeyError(f"no resource {kind!r} ({api_version or 'any version'}) is served")
        return min(found, key=lambda r: (r.group != "", r.group, r.version))

    def path(self, kind: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None, api_version: str | None = None) -> str:  # fmt: skip
        r = self.resource(kind, api_version)
        in_namespace = self.emulator.resources[r].namespaced and namespace is not None
        parts = ["api" if r.group == "" else f"apis/{r.group}", r.version,
                 f"namespaces/{namespace}" if in_namespace else None, r.plural, name, subresource]  # fmt: skip  # noqa: E501
        return "/" + "/".join(p for p in parts if p)

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json", **params: str) -> Any:  # fmt: skip
        """Any request; the decoded answer, or ApiError."""
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type}
        async with self.session.request(method, path, data=data, headers=headers, params=params) as response:  # fmt: skip  # noqa: E501
            answer = await response.json(content_type=None)
        if response.status >= 300:
            raise ApiError(response.status, answer)
        return answer

    async def create(self, obj: Obj, **params: str) -> Obj:
        namespace = obj.get("metadata", {}).get("namespace")
        path = self.path(obj["kind"], namespace, api_version=obj["apiVersion"])
        return await self.request("POST", path, obj, **params)

    async def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        meta = {"name": name} | ({"labels": labels} if labels else {})
        return await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        return await self.request("GET", self.path(kind, namespace, name))

    async def list(self, kind: str, namespace: str | None = None, **params: str) -> Objs:
        """The items; selectors go as keywords: labelSelector="app=web"."""
        return (await self.request("GET", self.path(kind, namespace), **params))["items"]

    async def patch(self, kind: str, namespace: str | None, name: str, patch: Any, *,
                    subresource: str | None = None, content_type: str = MERGE_PATCH) -> Obj:  # fmt: skip  # noqa: E501
        path = self.path(kind, namespace, name, subresource)
        return await self.request("PATCH", path, patch, content_type=content_type)

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Obj) -> Obj:
        return await self.patch(kind, namespace, name, {"status": status}, subresource="status")

    async def replace(self, obj: Obj, subresource: str | None = None) -> Obj:
        meta = obj["metadata"]
        path = self.path(obj["kind"], meta.get("namespace"), meta["name"], subresource,
                         api_version=obj["apiVersion"])  # fmt: skip
        return await self.request("PUT", path, obj)

    async def delete(self, kind: str, namespace: str | None, name: str, **options: Any) -> Obj:
        """DeleteOptions go as keywords: propagationPolicy="Orphan", preconditions={...}."""
        return await self.request("DELETE", self.path(kind, namespace, name), options or None)

    async def watch(self, kind: str, namespace: str | None = None, *, seconds: float = 0.3,
                    **params: str) -> Objs:  # fmt: skip
        """The events of a watch that the server ends after `seconds` (fractions allowed here,
        unlike in Kubernetes); resourceVersion=, labelSelector= go as keywords."""
        params = {"watch": "true", "timeoutSeconds": str(seconds), **params}
        async with self.session.get(self.path(kind, namespace), params=params) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.json(content_type=None))
            return [json.loads(line) async for line in response.content if line.strip()]

    async def wait_for(self, kind: str, namespace: str | None, name: str,
                       condition: Callable[[Obj], Any] = bool, timeout: float = 5) -> Obj:  # fmt: skip  # noqa: E501
        """The object once it exists and passes `condition`. Polls the store: no requests."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (obj := self._stored(kind, namespace, name)) is None or not condition(obj):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{kind} {namespace}/{name} not there or not as wanted: {obj}")
            await asyncio.sleep(0.01)
        return obj

    async def wait_deleted(self, kind: str, namespace: str | None, name: str,
                           timeout: float = 5) -> None:  # fmt: skip
        deadline = asyncio.get_running_loop().time() + timeout
        while (obj := self._stored(kind, namespace, name)) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{kind} {namespace}/{name} is still there: {obj}")
            await asyncio.sleep(0.01)

    def names(self, kind: str, namespace: str | None) -> set[str]:
        """Names of the stored objects of a kind, cheaply (no copies): for polling many."""
        resource = self.resource(kind)
        return {name for (r, ns, name) in self.emulator._store if ns == namespace and r == resource}

    def _stored(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        wanted = {"name": name, "namespace": namespace}
        objects = self.emulator.objects(self.resource(kind))
        return next((o for o in objects if {k: o["metadata"].get(k) for k in wanted} == wanted), None)  # fmt: skip  # noqa: E501

    async def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 30) -> Any:
        """`kubectl ARGS` against this server: a CompletedProcess, whatever the exit code."""
        return await kubectl(self.kubeconfig, *args, stdin=stdin, timeout=timeout)


@contextlib.asynccontextmanager
async def serve(
    workdir: Path, validate: bool = True, short_history: bool = False
) -> AsyncIterator[ApiServer]:
    """The server on a free port of 127.0.0.1, in the current event loop (short_history: see
    FidelityEmulator)."""
    emulator = build_emulator(validate, short_history)
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        api = ApiServer(emulator, url, write_kubeconfig(workdir / "kubeconfig", url))
        try:
            yield api
        finally:
            await api.session.close()
            emulator.close_watches()  # open watches would hold up the HTTP server's shutdown


@pytest_asyncio.fixture(name="apiserver")
async def apiserver_fixture(tmp_path: Path) -> AsyncIterator[ApiServer]:
    """A server for one test, in its event loop: import `apiserver_fixture`, ask for
    `apiserver` (or list this module in `pytest_plugins`)."""
    async with serve(tmp_path) as server:
        yield server


# ----- kopf in the test's loop -----------------------------------------------------------------

_server: contextvars.ContextVar[Any] = contextvars.ContextVar("test_apiserver")
_registries_with_login: weakref.WeakSet = weakref.WeakSet()


def _login_to_test_apiserver(**_: Any) -> kopf.ConnectionInfo:
    # Looked up per operator run: a registry may serve several tests and servers (this test
    # server, or a real one: tests.support.realserver).
    server = _server.get()
    ca = str(server.ca_file) if server.ca_file else None
    return kopf.ConnectionInfo(
        server=server.url, token=server.token, ca_path=ca, insecure=ca is None
    )


class _NotTheOperators(Collection):
    """Tasks kopf must leave alone when it stops: those from before it started, and the HTTP
    server's connection tasks (kopf would wait 5 s for them, then cancel them)."""

    def __init__(self, before: set[asyncio.Task]) -> None:
        self.before = before

    def __contains__(self, task: object) -> bool:
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        is_server = getattr(coro, "__qualname__", "").startswith("RequestHandler.")  # aiohttp's
        return is_server or task in self.before

    def __iter__(self) -> Iterator:
        return iter(self.before)

    def __len__(self) -> int:
        return len(self.before)


@contextlib.asynccontextmanager
async def run_operator(
    server: "ApiServer",  # or tests.support.realserver.KubeApiServer
    registry: kopf.OperatorRegistry,
    *,
    namespaces: Collection[str] = (),
    clusterwide: bool = False,
    settings: kopf.OperatorSettings | None = None,
    memo: object | None = None,
    standalone: bool = True,
    timeout: float = 10,
) -> AsyncIterator[asyncio.Task]:
    """kopf with `registry`'s handlers against `server`, as kopf's docs embed it (spawn_tasks,
    run_tasks, stop and ready flags): ready on entry (startup handlers done), stopped on exit,
    before the server closes. Yields the task running kopf; its failure is raised on exit.
    Watched namespaces must exist on the server, or kopf watches nothing there."""
    if registry not in _registries_with_login:
        kopf.on.login(registry=registry)(_login_to_test_apiserver)
        _registries_with_login.add(registry)
    url_token = _server.set(server)
    stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
    try:
        ignored = _NotTheOperators(asyncio.all_tasks())
        tasks = await kopf.spawn_tasks(
            registry=registry, settings=settings or kopf.OperatorSettings(), memo=memo,
            namespaces=namespaces, clusterwide=clusterwide, standalone=standalone,
            stop_flag=stop_flag, ready_flag=ready_flag,
        )  # fmt: skip
        operator = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored), name="kopf")
        try:
            await _until_ready(operator, ready_flag, timeout)
            yield operator
        finally:
            stop_flag.set()
            await asyncio.wait_for(operator, timeout)
    finally:
        _server.reset(url_token)


async def _until_ready(operator: asyncio.Task, ready_flag: asyncio.Event, timeout: float) -> None:
    ready = asyncio.create_task(ready_flag.wait())
    await asyncio.wait({ready, operator}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if operator.done():
        operator.result()  # raises what stopped it
        raise RuntimeError("kopf stopped before it was ready")
    if not ready_flag.is_set():
        raise TimeoutError(f"kopf was not ready within {timeout}s")
