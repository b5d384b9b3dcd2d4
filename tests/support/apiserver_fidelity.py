"""kmock's Kubernetes emulator with the API semantics kopf and kubectl rely on (TESTING.md lists
kmock's gaps): server-set metadata, optimistic concurrency, subresources, selectors, watches that
resume from a resourceVersion, garbage collection, and hooks for admission (422) and Tables.

kmock still parses requests, serves discovery and runs user reactions, which take precedence
(`apiserver.emulator["patch", kmock.resource("v1/configmaps")] << 500` injects a fault); this
class replaces its object store. Not emulated: strategic-merge list semantics (built-in kinds get
a JSON merge patch), server-side apply, RBAC, defaulting, foreground deletion, namespace
termination phases, watch bookmarks other than the initial-events end.
"""

import asyncio
import base64
import bisect
import copy
import datetime
import json
import random
import re
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jsonpatch
import kmock
from kmock._internal import parsing

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]  # (resource, namespace or None, name)
Selector = list[Callable[[Obj], bool]]
# (request, old or None on create, new) -> problems in the API server's words
# (`field.path: Reason: detail`); it may prune `new` in place, as the API server prunes.
Admission = Callable[[kmock.Request, Obj | None, Obj], list[str]]
# (resource, objects, request) -> a meta.k8s.io/v1 Table, for `kubectl get`
TableRenderer = Callable[[kmock.resource, list[Obj], kmock.Request], Obj]

NAMESPACES = kmock.resource("", "v1", "namespaces")
SECRETS = kmock.resource("", "v1", "secrets")
SERVER_META = ("uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp")
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's, for generateName
WATCH_POLL_S = 0.5  # how often an idle watch checks whether its client has gone
CAUSE_REASONS = {  # the API server's field.ErrorType, by the words its messages start with
    "Required value": "FieldValueRequired",
    "Forbidden": "FieldValueForbidden",
    "Unsupported value": "FieldValueNotSupported",
    "Duplicate value": "FieldValueDuplicate",
    "field not declared in schema": "FieldValueUnknown",
}
LABEL_REQUIREMENT = re.compile(
    r"(?P<neg>!)?(?P<key>[\w./-]+)"
    r"(?:\s*(?P<op>==|=|!=)\s*(?P<value>[\w./-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?"
)


class ApiCall(NamedTuple):
    """One request as the server answered it; watches are logged as they start streaming."""

    method: str
    path: str
    status: int
    query: str = ""


class Change(NamedTuple):
    """One write as watches replay it: the object after it (its last state, if deleted)."""

    rv: int
    resource: kmock.resource
    type: str
    obj: Obj
    old: Obj | None


def ok(payload: Any, code: int = 200) -> kmock.Response:
    # Always with an explicit status: kmock keeps the last status on its shared fallback
    # reaction, so a bare dict served after a 409 would go out as a 409 too.
    return kmock.Response(status=code, payload=payload)


def failure(code: int, reason: str, message: str, **details: Any) -> kmock.Response:
    """A Kubernetes Status body, as clients (kopf, kubectl) parse errors from."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip
    return ok(body | ({"details": details} if details else {}), code)


NO_RESOURCE = (404, "NotFound", "the server could not find the requested resource")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: nested dicts merge, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def parse_selectors(params: Any) -> Selector:
    """`labelSelector` and `fieldSelector` as tests on an object; ValueError if malformed."""
    split = re.compile(r",(?![^()]*\))")  # commas, but not those inside `in (a,b)`
    labels = [p.strip() for p in split.split(params.get("labelSelector", "")) if p.strip()]
    fields = [p.strip() for p in params.get("fieldSelector", "").split(",") if p.strip()]
    return [_label_test(part) for part in labels] + [_field_test(part) for part in fields]


def _label_test(part: str) -> Callable[[Obj], bool]:
    match = LABEL_REQUIREMENT.fullmatch(part)
    if not match or (match["neg"] and (match["op"] or match["set"])):
        raise ValueError(f"unable to parse requirement: {part!r}")
    key, value, negated = match["key"], match["value"], bool(match["neg"])

    def label(obj: Obj) -> str | None:
        return (obj["metadata"].get("labels") or {}).get(key)

    if match["set"]:
        values = {v.strip() for v in match["values"].split(",")}
        return lambda obj: (label(obj) in values) == (match["set"] == "in")
    if match["op"]:  # as in Kubernetes, `!=` also selects objects without the label
        return lambda obj: (label(obj) == value) == (match["op"] != "!=")
    return lambda obj: (label(obj) is not None) != negated


def _field_test(part: str) -> Callable[[Obj], bool]:
    match = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", part)
    if not match:
        raise ValueError(f"invalid field selector: {part!r}")
    path, op, value = match.groups()

    def field(obj: Obj) -> str:
        node: Any = obj
        for step in path.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        return "" if node is None else json.dumps(node) if isinstance(node, bool) else str(node)

    return lambda obj: (field(obj) == value) == (op != "!=")


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's parser, except that /api/v1/namespaces[/NAME[/status]] address Namespaces
    (kmock reads them as a namespace prefix and answers 500)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name, sub = (parts[3:] + [None, None])[:2]
        return parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
    return _kmock_parse_path(path)


_kmock_parse_path = getattr(parsing.parse_path, "__wrapped__", parsing.parse_path)
_parse_path.__wrapped__ = _kmock_parse_path  # so that a re-import wraps kmock's, not ours
parsing.parse_path = _parse_path  # kmock's Request._parse looks it up here on every request


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _normalized(resource: kmock.resource, obj: Obj) -> Obj:
    """Secrets keep `stringData` base64-encoded in `data`, as the API server stores them."""
    if resource != SECRETS or "stringData" not in obj:
        return obj
    encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in obj["stringData"].items()}
    return {k: v for k, v in obj.items() if k != "stringData"} | {
        "data": (obj.get("data") or {}) | encoded
    }


def _generation_counts(obj: Obj, status_is_separate: bool) -> Obj:
    """What `generation` counts: everything but metadata (and status, if a subresource)."""
    skipped = {"metadata", "status"} if status_is_separate else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skipped}


@attrs.define(kw_only=True)
class FidelityEmulator(kmock.KubernetesEmulator):
    admission: Admission | None = None
    render_table: TableRenderer | None = None
    # Kinds served from a CRD: no strategic merge patches, PUT needs a resourceVersion.
    custom: set[kmock.resource] = attrs.field(factory=set)
    calls: list[ApiCall] = attrs.field(factory=list)
    # kmock matches each request against its whole request history, so its cost per request
    # grows with requests served (14 ms a GET after 50 jobs' worth, 93 ms after 400). Long runs
    # (the scale bench, fault suites) keep only the requests still being served; `calls` keeps
    # everything. Views that slice the history (`emulator[...][:1] << 503`) need all of it.
    short_history: bool = False
    _serving: dict[int, kmock.Request] = attrs.field(factory=dict, init=False)
    _store: dict[Key, Obj] = attrs.field(factory=dict, init=False)
    _history: list[Change] = attrs.field(factory=list, init=False)  # every write, for watches
    _rv: int = attrs.field(default=0, init=False)
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # kmock's fallbacks call our _serve_* overrides
        self.fallback[kmock.method.PUT] << self._serve_replace
        # Ahead of kmock's own watch fallback: client-go refuses streams with no JSON type.
        json_type = kmock.headers({"Content-Type": "application/json"})
        (self.fallback**1)[kmock.action.WATCH] << json_type << self._serve_watch

    async def __call__(self, raw_request: Any) -> Any:
        response = await super().__call__(raw_request)
        if raw_request.query.get("watch") not in ("true", "1") or response.status != 200:
            self._log(raw_request, response.status)
        return response

    def _log(self, raw: Any, code: int) -> None:
        self.calls.append(ApiCall(raw.method, raw.path, code, raw.query_string))

    async def _handle(self, request: kmock.Request) -> Any:
        if not self.short_history:
            return await self._react(request)
        self._serving[id(request)] = request
        self._requests[:] = [r for r in self._requests if id(r) in self._serving]
        try:
            return await self._react(request)
        finally:
            del self._serving[id(request)]

    async def _react(self, request: kmock.Request) -> Any:
        # Skip KubernetesEmulator._handle: it writes kmock's own store before any reaction runs.
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    def close_watches(self) -> None:
        """End every watch stream now, so that the HTTP server can shut down at once."""
        self._closing = True
        self._wake()

    def seed(self, resource: kmock.resource | str, obj: Obj) -> Obj:
        """Store an object as if created, with no request: nothing logged, nothing validated."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1}
        key = (kmock.resource(resource), meta.get("namespace"), meta["name"])
        return self._commit(key, "ADDED", obj, None)

    def objects(self, resource: kmock.resource | str) -> list[Obj]:
        """Stored objects of a resource, for assertions without HTTP."""
        resource = kmock.resource(resource)
        return [copy.deepcopy(obj) for (r, _, _), obj in self._sorted() if r == resource]

    # ----- reading -----------------------------------------------------------------------------

    def _sorted(self) -> list[tuple[Key, Obj]]:
        return sorted(self._store.items(), key=lambda item: (item[0][1] or "", item[0][2]))

    def _info(self, resource: kmock.resource | None) -> kmock.ResourceInfo | None:
        if resource is None or resource.plural is None:
            return None
        return next((self.resources[r] for r in self.resources if r == resource), None)

    def _key(self, request: kmock.Request, name: str | None = None) -> Key:
        info = self._info(request.resource)
        namespace = request.namespace if info is not None and info.namespaced else None
        return (request.resource, namespace, name or request.name)

    def _selected(self, request: kmock.Request, selector: Selector) -> list[Obj]:
        return [
            obj
            for (resource, namespace, _), obj in self._sorted()
            if resource == request.resource and request.namespace in (None, namespace)
            if all(test(obj) for test in selector)
        ]

    def _wants_table(self, request: kmock.Request) -> bool:
        return self.render_table is not None and "as=Table" in request.headers.get("Accept", "")

    def _not_found(self, request: kmock.Request, name: str | None = None) -> kmock.Response:
        name, resource = name or request.name, request.resource
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return failure(404, "NotFound", f'{what} "{name}" not found', name=name,
                       group=resource.group, kind=resource.plural)  # fmt: skip

    async def _serve_list(self, request: kmock.Request) -> kmock.Response:
        info = self._info(request.resource)
        if info is None:
            return failure(*NO_RESOURCE)
        try:
            items = self._selected(request, parse_selectors(request.params))
        except ValueError as e:
            return failure(400, "BadRequest", str(e))
        if self._wants_table(request):
            return ok(self.render_table(request.resource, items, request))
        return ok({"kind": f"{info.kind}List", "apiVersion": _group_version(request.resource),
                   "metadata": {"resourceVersion": str(self._rv)}, "items": items})  # fmt: skip

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Response:
        info = self._info(request.resource)
        if info is None or (request.subresource and request.subresource not in info.subresources):
            return failure(*NO_RESOURCE)
        obj = self._store.get(self._key(request))
        if obj is None:
            return self._not_found(request)
        if self._wants_table(request):
            return ok(self.render_table(request.resource, [obj], request))
        return ok(obj)

    async def _serve_watch(self, request: kmock.Request) -> Any:
        info = self._info(request.resource)
        since = request.params.get("resourceVersion", "")
        try:
            selector = parse_selectors(request.params)
            initial = not since or since == "0" or request.params.get("sendInitialEvents") == "true"
            start = self._rv if initial else int(since)
        except ValueError as e:
            raise kmock.KubernetesError(400, "BadRequest", str(e), {}) from None
        if info is None:
            raise kmock.KubernetesResourceNotFoundError()
        # Snapshot and stream position come with no await between: nothing lost, nothing twice.
        snapshot = self._selected(request, selector) if initial else []
        position = bisect.bisect_right(self._history, start, key=lambda change: change.rv)
        self._log(request._raw_request, 200)
        yield b""  # the headers go now: clients wait for them before anything happens
        for obj in snapshot:
            yield {"type": "ADDED", "object": obj}
        if request.params.get("sendInitialEvents") == "true":
            end = {"k8s.io/initial-events-end": "true"}
            meta = {"resourceVersion": str(start), "annotations": end}
            yield {"type": "BOOKMARK", "object": {"kind": info.kind, "metadata": meta}}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(request.params.get("timeoutSeconds") or "inf")
        while True:
            for change in self._history[position:]:
                position += 1
                event = self._watch_event(request, change, selector)
                if event is not None:
                    yield event  # an await: more changes may come meanwhile, the loop sees them
            if position < len(self._history):
                continue
            transport, changed = request._raw_request.transport, self._changed
            if self._closing or transport is None or transport.is_closing():
                return
            if (remaining := deadline - loop.time()) <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), min(WATCH_POLL_S, remaining))
            except TimeoutError:
                pass

    def _watch_event(self, request: kmock.Request, change: Change, selector: Selector) -> Any:
        """The event this watch sees; entering or leaving its selector reads as ADDED/DELETED."""
        namespace = change.obj["metadata"].get("namespace")
        if change.resource != request.resource or request.namespace not in (None, namespace):
            return None
        now, before = (obj is not None and all(test(obj) for test in selector)
                       for obj in (change.obj, change.old))  # fmt: skip
        if change.type == "MODIFIED" and now != before:
            return {"type": "ADDED" if now else "DELETED", "object": change.obj}
        return {"type": change.type, "object": change.obj} if now else None

    # ----- writing -----------------------------------------------------------------------------

    def _commit(self, key: Key, event: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if event == "DELETED":
            del self._store[key]
        else:
            self._store[key] = obj
        self._history.append(Change(self._rv, key[0], event, obj, old))
        self._wake()
        return obj

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _invalid(self, request: kmock.Request, name: str, problems: list[str]) -> kmock.Response:
        kind = self._info(request.resource).kind
        what = f"{kind}.{request.resource.group}" if request.resource.group else kind
        listed = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
        causes = []
        for problem in problems:
            field, _, message = problem.partition(": ")
            reason = CAUSE_REASONS.get(message.split(":")[0], "FieldValueInvalid")
            causes.append({"reason": reason, "message": message, "field": field})
        return failure(422, "Invalid", f'{what} "{name}" is invalid: {listed}', name=name,
                       group=request.resource.group, kind=kind, causes=causes)  # fmt: skip

    def _conflict(self, request: kmock.Request, reason: str, message: str) -> kmock.Response:
        resource = request.resource
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return failure(409, reason, message.format(what=what, name=request.name),
                       name=request.name, group=resource.group, kind=resource.plural)  # fmt: skip

    def _problems(self, request: kmock.Request, old: Obj | None, new: Obj) -> list[str]:
        return self.admission(request, old, new) if self.admission is not None else []

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        info = self._info(request.resource)
        if info is None or (info.namespaced and request.namespace is None):
            return failure(*NO_RESOURCE)
        if not isinstance(request.data, dict):
            return failure(400, "BadRequest", "the body must be a JSON object")
        if info.namespaced and (NAMESPACES, None, request.namespace) not in self._store:
            return self._not_found(_as_namespace(request))
        obj = copy.deepcopy(request.data)
        meta = obj.setdefault("metadata", {})
        if info.namespaced and meta.setdefault("namespace", request.namespace) != request.namespace:
            return failure(400, "BadRequest", "the namespace of the provided object does not "
                           "match the namespace sent on the request")  # fmt: skip
        if not info.namespaced:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(request, meta["generateName"])
        if not meta.get("name"):
            return self._invalid(request, "", [NO_NAME])
        key = self._key(request, meta["name"])
        if key in self._store:
            request = attrs.evolve(request, name=meta["name"])
            return self._conflict(request, "AlreadyExists", '{what} "{name}" already exists')
        obj = self._defaulted(request, info, obj)
        problems = self._problems(request, None, obj)
        if problems:
            return self._invalid(request, meta["name"], problems)
        meta = obj["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_META}
        meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1}
        return ok(self._commit(key, "ADDED", obj, None), 201)

    def _generate_name(self, request: kmock.Request, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(NAME_ALPHABET, k=5))
            if self._key(request, name) not in self._store:
                return name

    def _defaulted(self, request: kmock.Request, info: kmock.ResourceInfo, obj: Obj) -> Obj:
        obj = {"apiVersion": _group_version(request.resource), "kind": info.kind, **obj}
        if "status" in info.subresources:
            obj.pop("status", None)  # written through /status only
        if request.resource == NAMESPACES:
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]  # for selectors
            obj["status"] = {"phase": "Active"}
        return _normalized(request.resource, obj)

    async def _serve_update(self, request: kmock.Request) -> kmock.Response:
        old = self._store.get(self._key(request))
        if old is None:
            return self._not_found(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if not isinstance(request.data, dict | list):
            return failure(400, "BadRequest", "the patch must be JSON")
        if content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(old, request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                return failure(422, "Invalid", str(e))  # kopf: "retry on a fresher body"
        elif content_type == "application/merge-patch+json" or (
            content_type == "application/strategic-merge-patch+json"
            and request.resource not in self.custom  # custom resources refuse it, as for real
        ):
            new = merge_patch(old, request.data)
        else:
            return failure(415, "UnsupportedMediaType", f"{content_type!r} is not supported "
                           "here: use application/merge-patch+json or json-patch+json")  # fmt: skip
        return self._write(request, old, new)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Response:
        if self._info(request.resource) is None or request.name is None:
            return failure(405, "MethodNotAllowed", "PUT goes to an object's URL")
        old = self._store.get(self._key(request))
        if old is None:
            return self._not_found(request)
        if not isinstance(request.data, dict):
            return failure(400, "BadRequest", "the body must be a JSON object")
        if "resourceVersion" not in request.data.get("metadata", {}) and (
            request.resource in self.custom  # no unconditional updates of custom resources
        ):
            return self._invalid(request, request.name, [NO_RESOURCE_VERSION])
        return self._write(request, old, copy.deepcopy(request.data))

    def _write(self, request: kmock.Request, old: Obj, new: Obj) -> kmock.Response:
        """A PATCH or PUT: conflicts, the subresource split, admission, generation, finalizers."""
        info, old_meta = self._info(request.resource), old["metadata"]
        if request.subresource and request.subresource not in info.subresources:
            return failure(*NO_RESOURCE)
        sent = new.get("metadata", {}).get("resourceVersion")
        if sent not in (None, old_meta["resourceVersion"]):
            return self._conflict(request, "Conflict", STALE)
        new = _normalized(request.resource, _kept(info, request.subresource, old, new))
        if new == old:
            return ok(old)  # a no-op write bumps nothing and makes no event
        finalizers = new["metadata"].get("finalizers") or []
        added = set(finalizers) - set(old_meta.get("finalizers") or [])
        problems = [ADDED_FINALIZER] if old_meta.get("deletionTimestamp") and added else []
        problems = problems or self._problems(request, old, new)
        if problems:
            return self._invalid(request, request.name, problems)
        separate = "status" in info.subresources
        if _generation_counts(new, separate) != _generation_counts(old, separate):
            new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
        if old_meta.get("deletionTimestamp") and not finalizers:
            return ok(self._remove(self._key(request), new, old))  # the last finalizer is gone
        return ok(self._commit(self._key(request), "MODIFIED", new, old))

    async def _serve_delete(self, request: kmock.Request) -> kmock.Response:
        key = self._key(request)
        old = self._store.get(key)
        if old is None:
            return self._not_found(request)
        options = request.data if isinstance(request.data, dict) else {}
        for field, expected in (options.get("preconditions") or {}).items():
            if expected not in (None, old["metadata"].get(field)):
                return self._conflict(request, "Conflict", STALE)
        policy = options.get("propagationPolicy") or request.params.get("propagationPolicy")
        return ok(self._delete(key, orphan=policy == "Orphan"))

    def _delete(self, key: Key, orphan: bool = False) -> Obj:
        """Delete now, or only mark for deletion while finalizers remain."""
        old = self._store[key]
        if old["metadata"].get("deletionTimestamp"):
            return old
        if not old["metadata"].get("finalizers"):
            return self._remove(key, copy.deepcopy(old), old, orphan)
        new = copy.deepcopy(old)
        new["metadata"] |= {"deletionTimestamp": _now(), "deletionGracePeriodSeconds": 0,
                            "generation": old["metadata"].get("generation", 1) + 1}  # fmt: skip
        return self._commit(key, "MODIFIED", new, old)

    def _remove(self, key: Key, last: Obj, old: Obj, orphan: bool = False) -> Obj:
        self._commit(key, "DELETED", last, old)
        if orphan:
            self._orphan(last["metadata"]["uid"])
        else:
            self._collect_garbage(key, last)
        return last

    def _collect_garbage(self, key: Key, gone: Obj) -> None:
        """Background propagation, done at once so that tests need not wait: dependents whose
        owners are all gone are deleted, and so is everything in a deleted namespace."""
        alive = {obj["metadata"]["uid"] for obj in self._store.values()}
        for dep_key, dep in list(self._store.items()):
            owners = {ref.get("uid") for ref in dep["metadata"].get("ownerReferences") or []}
            orphaned = gone["metadata"]["uid"] in owners and not owners & alive
            in_namespace = key[0] == NAMESPACES and dep_key[1] == key[2]
            if (orphaned or in_namespace) and dep_key in self._store:
                self._delete(dep_key)

    def _orphan(self, uid: str) -> None:
        """Orphan propagation: dependents stay, without their reference to the gone owner."""
        for key, obj in list(self._store.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [ref for ref in refs if ref.get("uid") != uid]
            if len(kept) < len(refs):
                new = copy.deepcopy(obj)
                del new["metadata"]["ownerReferences"]
                if kept:
                    new["metadata"]["ownerReferences"] = kept
                self._commit(key, "MODIFIED", new, obj)

    # ----- discovery ---------------------------------------------------------------------------

    async def _serve_version(self, request: kmock.Request) -> Any:
        document = await super()._serve_version(request)
        group, version = request.resource.group, request.resource.version
        if group == "":
            document["groupVersion"] = version  # kmock says "/v1": kubectl then finds no kinds
        for entry in document["resources"]:
            info = self._info(kmock.resource(group, version, entry["name"].split("/")[0]))
            entry["singularName"] = (info.singular or info.kind.lower()) if info else ""
            if "/" in entry["name"]:  # subresources: no short names (kubectl warns), no lists
                entry |= {"shortNames": [], "categories": [], "verbs": ["get", "patch", "update"]}
        return document


STALE = (
    'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
    "please apply your changes to the latest version and try again"
)
NO_NAME = "metadata.name: Required value: name or generateName is required"
NO_RESOURCE_VERSION = (
    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
)
ADDED_FINALIZER = (
    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"
)


def _as_namespace(request: kmock.Request) -> kmock.Request:
    return attrs.evolve(request, resource=NAMESPACES, name=request.namespace, namespace=None)


def _kept(info: kmock.ResourceInfo, subresource: str | None, old: Obj, new: Obj) -> Obj:
    """`new` as far as this endpoint may change it; the rest stays as in `old`: /status writes
    change only status, main writes never status (if a subresource) nor server-set metadata."""
    if subresource == "status":
        result = copy.deepcopy({k: v for k, v in old.items() if k != "status"})
        return result | ({"status": new["status"]} if new.get("status") is not None else {})
    result = dict(new, metadata=dict(new.get("metadata") or {}))
    result["apiVersion"], result["kind"] = old.get("apiVersion"), old.get("kind")
    if "status" in info.subresources:
        result.pop("status", None)
        result |= {"status": copy.deepcopy(old["status"])} if "status" in old else {}
    for field in (*SERVER_META, "name", "namespace", "deletionGracePeriodSeconds"):
        result["metadata"].pop(field, None)
        if field in old["metadata"]:
            result["metadata"][field] = old["metadata"][field]
    return result
