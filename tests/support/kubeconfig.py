"""What kubectl needs from the test API server: a kubeconfig, a runner that does not block the
server's event loop, and the Tables that `kubectl get` prints a CRD's printer columns from.

kubectl runs as an asyncio subprocess: a blocking `subprocess.run` would freeze the very server
it waits for. It sends built-in kinds as protobuf, which kmock cannot read: create those with
the Python client or `ApiServer.create`; custom resources go as JSON (`apply --validate=false`).
"""

import asyncio
import datetime
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "kubetune-test"
NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}  # fmt: skip
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
JSONPATH_STEP = re.compile(
    r"\.(?P<key>[\w-]+)|\[(?P<index>\d+)\]|\['(?P<quoted>[^']+)'\]"
    r"|\[\?\(@\.(?P<field>[\w.-]+)\s*==\s*[\"'](?P<value>[^\"']*)[\"']\)\]"
)


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    """A kubeconfig with a dummy token: the test server checks no credentials."""
    context = {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": "dummy-token"}}],
        "contexts": [{"name": CONTEXT, "context": context}],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    """Run `kubectl ARGS` against the server in `kubeconfig`; never raises on a non-zero exit."""
    binary = shutil.which("kubectl") or "/usr/bin/kubectl"
    env = os.environ | {
        "KUBECONFIG": str(kubeconfig),
        # Discovery is cached per host:port; a later test reusing the port must not see it.
        "KUBECACHEDIR": str(kubeconfig.parent / "kubectl-cache"),
    }
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
    return subprocess.CompletedProcess(
        [binary, *args], process.returncode, out.decode(), err.decode()
    )


# ----- Tables ----------------------------------------------------------------------------------


def table_renderer(columns: dict[Any, list[dict]]) -> Callable:
    """Tables as the API server renders custom resources for `kubectl get`: Name, then the
    CRD's additionalPrinterColumns (Age if it has none), keyed here by resource."""

    def render(resource: Any, items: list[dict], request: Any) -> dict:
        extra = columns.get(resource) or [AGE_COLUMN]
        fields = ("name", "type", "format", "description", "priority")
        defaults = {"format": "", "description": "", "priority": 0}
        definitions = [NAME_COLUMN] + [
            {f: c.get(f, defaults.get(f)) for f in fields} for c in extra
        ]
        include = request.params.get("includeObject", "Metadata")
        rows = [
            {"cells": [obj["metadata"]["name"]] + [_cell(c, jsonpath(obj, c["jsonPath"]))
                                                   for c in extra],
             "object": _row_object(obj, include)}
            for obj in items
        ]  # fmt: skip
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
                "columnDefinitions": definitions, "rows": rows}  # fmt: skip

    return render


def _row_object(obj: dict, include: str) -> dict | None:
    if include == "Object":
        return obj
    if include == "None":
        return None
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}  # fmt: skip


def jsonpath(obj: Any, path: str) -> Any:
    """The first value at a printer-column path: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].b`."""
    nodes, position = [obj], 0
    path = path.strip().removeprefix("{").removesuffix("}")
    while position < len(path):
        step = JSONPATH_STEP.match(path, position)
        if step is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {position}")
        position = step.end()
        nodes = list(_step(nodes, step))
    return nodes[0] if nodes else None


def _step(nodes: list, step: re.Match) -> Iterator:
    key, index, field = step["key"] or step["quoted"], step["index"], step["field"]
    for node in nodes:
        if key is not None and isinstance(node, dict) and key in node:
            yield node[key]
        elif index is not None and isinstance(node, list) and int(index) < len(node):
            yield node[int(index)]
        elif field is not None and isinstance(node, list):
            values = ((item, jsonpath(item, "." + field)) for item in node)
            yield from (item for item, value in values if value is not None and str(value) == step["value"])  # fmt: skip  # noqa: E501


def _cell(column: dict, value: Any) -> Any:
    """A cell typed as the CRD table convertor types it; None prints as <none>."""
    kind = column["type"]
    if value is None or (isinstance(value, dict | list) and kind != "string"):
        return None
    if kind == "date":
        return _age(value) if isinstance(value, str) else None
    if kind in ("integer", "number") and isinstance(value, int | float) and value is not True:
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else json.dumps(value)


def _age(timestamp: str) -> str:
    """kubectl's short durations (duration.HumanDuration): coarser as they grow."""
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(int((datetime.datetime.now(datetime.UTC) - then).total_seconds()), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h"
    return f"{days}d{hours % 24}h" if days < 8 and hours % 24 else f"{days}d"
