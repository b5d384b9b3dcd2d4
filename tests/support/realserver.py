"""The test API server's helpers (tests.support.apiserver.ApiServer) over a real kube-apiserver
of tests/cluster, so that a suite written against the test server runs on the real one too:
same calls, same ApiError, waits that poll the API instead of kmock's store. What only the test
server has (its request log) is missing here: `requests` is None."""

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.apiserver import MERGE_PATCH, ApiError
from tests.support.kubeconfig import kubectl

OUR_LABEL = "kubetune.io/finetunejob"  # on the operator's ConfigMaps and PyTorchJobs
# kind, plural, singular or short name -> (group/version, plural, namespaced)
KINDS = {
    ("finetunejob", "finetunejobs", "ftj"): ("kubetune.io/v1alpha1", "finetunejobs", True),
    ("modelhub", "modelhubs", "mhub"): ("kubetune.io/v1alpha1", "modelhubs", True),
    ("pytorchjob", "pytorchjobs"): ("kubeflow.org/v1", "pytorchjobs", True),
    ("trainjob", "trainjobs"): ("trainer.kubeflow.org/v1alpha1", "trainjobs", True),
    ("pod", "pods"): ("v1", "pods", True),
    ("event", "events"): ("v1", "events", True),
    ("configmap", "configmaps"): ("v1", "configmaps", True),
    ("secret", "secrets"): ("v1", "secrets", True),
    ("namespace", "namespaces"): ("v1", "namespaces", False),
}


class KubeApiServer:
    """A real kube-apiserver as tests.support.apiserver.ApiServer's callers use it."""

    requests = None  # no request log on a real server

    def __init__(self, url: str, token: str, ca_file: Path, kubeconfig: Path):
        self.url, self.token, self.ca_file, self.kubeconfig = url, token, ca_file, kubeconfig
        context = ssl.create_default_context(cafile=str(ca_file))
        self.session = aiohttp.ClientSession(
            url,
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(ssl=context),
        )

    @classmethod
    def of(cls, plane) -> "KubeApiServer":
        """From a tests.cluster.controlplane.ControlPlane."""
        return cls(plane.server, plane.pki.admin_token, plane.pki.ca_cert, plane.kubeconfig)

    async def close(self) -> None:
        await self.session.close()

    def path(self, kind: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:  # fmt: skip
        api_version, plural, namespaced = next(
            v for names, v in KINDS.items() if kind.lower() in names
        )
        base = "api/v1" if api_version == "v1" else f"apis/{api_version}"
        parts = [base, f"namespaces/{namespace}" if namespaced and namespace else None, plural,
                 name, subresource]  # fmt: skip
        return "/" + "/".join(p for p in parts if p)

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json", **params: str) -> Any:  # fmt: skip
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type}
        async with self.session.request(
            method, path, data=data, headers=headers, params=params
        ) as response:
            answer = await response.json(content_type=None)
        if response.status >= 300:
            raise ApiError(response.status, answer)
        return answer

    async def create(self, obj: dict, **params: str) -> dict:
        namespace = obj.get("metadata", {}).get("namespace")
        return await self.request("POST", self.path(obj["kind"], namespace), obj, **params)

    async def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        meta = {"name": name} | ({"labels": labels} if labels else {})
        return await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})

    async def get(self, kind: str, namespace: str | None, name: str) -> dict:
        return await self.request("GET", self.path(kind, namespace, name))

    async def list(self, kind: str, namespace: str | None = None, **params: str) -> list[dict]:
        return (await self.request("GET", self.path(kind, namespace), **params))["items"]

    async def patch(self, kind: str, namespace: str | None, name: str, patch: Any, *,
                    subresource: str | None = None, content_type: str = MERGE_PATCH) -> dict:  # fmt: skip  # noqa: E501
        path = self.path(kind, namespace, name, subresource)
        return await self.request("PATCH", path, patch, content_type=content_type)

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: dict):
        return await self.patch(kind, namespace, name, {"status": status}, subresource="status")

    async def delete(self, kind: str, namespace: str | None, name: str, **options: Any) -> dict:
        return await self.request("DELETE", self.path(kind, namespace, name), options or None)

    async def wait_for(self, kind: str, namespace: str | None, name: str, condition=bool,
                       timeout: float = 5) -> dict:  # fmt: skip
        """The object once it exists and passes `condition`, polled over the API."""
        deadline = asyncio.get_running_loop().time() + timeout * 2  # a real server is slower
        while True:
            obj = await self._find(kind, namespace, name)
            if obj is not None and condition(obj):
                return obj
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{kind} {namespace}/{name} not there or not as wanted: {obj}")
            await asyncio.sleep(0.05)

    async def wait_deleted(self, kind: str, namespace: str | None, name: str,
                           timeout: float = 5) -> None:  # fmt: skip
        deadline = asyncio.get_running_loop().time() + timeout * 2
        while (obj := await self._find(kind, namespace, name)) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{kind} {namespace}/{name} is still there: {obj}")
            await asyncio.sleep(0.05)

    async def clear(self, namespaces, kinds=("ftj", "mhub", "pytorchjob", "pod", "event")):
        """Delete every object of `kinds` in `namespaces`, finalizers removed first, and the
        operator's ConfigMaps; returns once they are gone (for a server shared by tests)."""
        for namespace in namespaces:
            for kind in kinds:
                for obj in await self.list(kind, namespace):
                    name = obj["metadata"]["name"]
                    if obj["metadata"].get("finalizers"):
                        await self.patch(kind, namespace, name, {"metadata": {"finalizers": None}})
                    await self._delete_quietly(kind, namespace, name)
            for obj in await self.list("configmap", namespace, labelSelector=OUR_LABEL):
                await self._delete_quietly("configmap", namespace, obj["metadata"]["name"])
        for namespace in namespaces:
            for kind in kinds[:3]:
                for obj in await self.list(kind, namespace):
                    await self.wait_deleted(kind, namespace, obj["metadata"]["name"])

    async def _delete_quietly(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self.delete(kind, namespace, name, gracePeriodSeconds=0)
        except ApiError as err:
            if err.status != 404:
                raise

    async def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 30) -> Any:
        return await kubectl(self.kubeconfig, *args, stdin=stdin, timeout=timeout)

    async def _find(self, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return await self.get(kind, namespace, name)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
