"""A kubelet for one extra node of the test control plane, whose pods really run: their
containers as local processes (pod_runner.py), their status reported through the API as a
kubelet reports it.

kwok leaves this node alone: it manages only nodes annotated kwok.x-k8s.io/node=fake
(addons.kwok), and a pod on a node it does not manage matches none of its Stages. So no Stage
needs an exception, and nothing else of the control plane changes. The node is this process's
to keep alive: registered with a Ready condition, its Lease in kube-node-lease renewed (the node
lifecycle controller marks a node without one NotReady and evicts its pods), and deleted, with
its pods, on stop. Pods reach it by nodeSelector (a label of the node).

    with LocalKubelet(plane, "local-0", workdir, images, labels={...}) as kubelet:
        ...  # pods the scheduler binds to local-0 run here
"""

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from tests.cluster.cluster_dns import ClusterNames
from tests.cluster.images import Image
from tests.cluster.pod_runner import STRATEGIC, PodRun, decode_secret, now

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS, RENEW_EVERY = 40, 10  # as a kubelet: its lease lasts 40 s, renewed every 10 s
# The pod network's resolver for containers: `nslookup NAME` answers for the names of the
# cluster's Services and of pods under headless ones (cluster_dns.py), one shell pattern a line
# (the Training Operator's init container waits for the master's Service this way).
NSLOOKUP = """#!/bin/sh
name="$1"
while read -r pattern; do
  case "$name" in $pattern) echo "Name: $name"; echo "Address: 127.0.0.1"; exit 0;; esac
done < "{hosts}"
echo "** server can't find $name: NXDOMAIN" >&2; exit 1
"""


class LocalKubelet:
    """Runs the pods bound to `node`. `images` says what each image holds (a pod naming an
    image it lacks fails to start); `termination_log_env` is the variable by which a container
    learns where its terminationMessagePath is on this machine."""

    def __init__(self, plane, node: str, workdir: Path, images: dict[str, Image],
                 labels: dict[str, str] | None = None, capacity: dict[str, str] | None = None,
                 termination_log_env: str = "KUBETUNE_TERMINATION_LOG",
                 poll: float = 0.5):  # fmt: skip
        self.node, self.workdir, self.images = node, workdir, images
        self.labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", **(labels or {})}  # fmt: skip
        self.capacity = capacity or {"cpu": "16", "memory": "64Gi", "pods": "110",
                                     "ephemeral-storage": "2Ti"}  # fmt: skip
        self.termination_log_env, self.poll = termination_log_env, poll
        api = plane.api_client()
        self.core = client.CoreV1Api(api)
        # Leases through the dynamic client: the typed one turns renewTime into a datetime and
        # back without its microseconds, which the API server's MicroTime refuses.
        self.leases = plane.dynamic.resources.get(api_version="coordination.k8s.io/v1",
                                                  kind="Lease")
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.tools = workdir / "tools"
        self._hosts = workdir / "hosts"
        self.names = ClusterNames()  # what the cluster DNS answers, as of the last sync
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet {node}", daemon=True)

    def __enter__(self) -> "LocalKubelet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the node -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "LocalKubelet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tools.mkdir(exist_ok=True)
        self._hosts.write_text("")
        nslookup = self.tools / "nslookup"
        nslookup.write_text(NSLOOKUP.format(hosts=self._hosts))
        nslookup.chmod(0o755)
        self.core.create_node({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": self.node, "labels": self.labels}})  # fmt: skip
        self._node_status()
        self._renew_lease()
        self._sync()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._schedulable():  # the node lifecycle controller lifts its not-ready taint
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node} not Ready and untainted in {timeout:.0f} s")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Stops every pod's processes, deletes the pods, the Lease and the node."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for run in self.runs.values():
            run.delete(grace=0)
        for run in self.runs.values():
            run.thread.join(timeout=15)
        for pod in self._pods():
            self.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
        try:
            self.leases.delete(name=self.node, namespace=LEASE_NAMESPACE)
        except NotFoundError:
            pass
        try:
            self.core.delete_node(self.node)
        except ApiException as err:
            if err.status != 404:
                raise

    def _node_status(self) -> None:
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status", "lastHeartbeatTime": now(),
                 "lastTransitionTime": now()}  # fmt: skip
        fine = [{"type": kind, "status": "False", "reason": f"KubeletHas{reason}",
                 "lastHeartbeatTime": now(), "lastTransitionTime": now()}
                for kind, reason in (("MemoryPressure", "SufficientMemory"),
                                     ("DiskPressure", "NoDiskPressure"),
                                     ("PIDPressure", "SufficientPID"))]  # fmt: skip
        status = {"capacity": self.capacity, "allocatable": self.capacity,
                  "conditions": [*fine, ready],
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                {"type": "Hostname", "address": self.node}],
                  "nodeInfo": {"kubeletVersion": "v1.35.0-local", "operatingSystem": "linux",
                               "architecture": "amd64", "containerRuntimeVersion": "local://0",
                               "kernelVersion": "", "osImage": "", "machineID": "",
                               "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}}  # fmt: skip
        self.core.patch_node_status(self.node, {"status": status}, _content_type=STRATEGIC)

    def _renew_lease(self) -> None:
        micro = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro}  # fmt: skip
        try:
            self.leases.patch(name=self.node, namespace=LEASE_NAMESPACE, body={"spec": spec},
                              content_type="application/merge-patch+json")  # fmt: skip
        except NotFoundError:
            node = self.core.read_node(self.node)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node,
                     "uid": node.metadata.uid}  # fmt: skip
            self.leases.create(namespace=LEASE_NAMESPACE, body={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "ownerReferences": [owner]}, "spec": spec})

    def _schedulable(self) -> bool:
        node = self.core.read_node(self.node)
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        return ready and not node.spec.taints

    # -- pods ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.poll):
            try:
                if time.monotonic() - renewed > RENEW_EVERY:
                    self._renew_lease()
                    renewed = time.monotonic()
                self._sync()
            except Exception as err:  # noqa: BLE001 (the API server may be away: next round)
                log.warning("kubelet %s: %s", self.node, err)

    def _sync(self) -> None:
        self._resolvable()
        pods = {p["metadata"]["uid"]: p for p in self._pods()}
        for uid, pod in pods.items():
            meta, phase = pod["metadata"], (pod.get("status") or {}).get("phase")
            if uid not in self.runs and not meta.get("deletionTimestamp") and phase not in (
                    "Succeeded", "Failed"):  # fmt: skip
                self.runs[uid] = PodRun(self, pod).start()
            elif uid in self.runs and meta.get("deletionTimestamp"):
                self.runs[uid].delete(meta.get("deletionGracePeriodSeconds"))
            elif uid not in self.runs and meta.get("deletionTimestamp"):
                self.delete_pod(meta["namespace"], meta["name"], uid)  # nothing of it runs
        for uid, run in self.runs.items():
            if uid not in pods:
                run.delete(grace=0)

    def _pods(self) -> list[dict]:
        answer = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", _preload_content=False)
        return json.loads(answer.data).get("items") or []

    def _resolvable(self) -> None:
        answer = self.core.list_service_for_all_namespaces(_preload_content=False)
        self.names = ClusterNames.from_services(json.loads(answer.data).get("items") or [])
        partial = self._hosts.with_suffix(".partial")
        partial.write_text("".join(f"{n}\n" for n in self.names.host_patterns()))
        partial.replace(self._hosts)

    # -- what pod runs ask of the API ---------------------------------------------------------

    def image(self, name: str) -> Image:
        if name not in self.images:
            raise LookupError(f"image {name}: not on this node (it has {sorted(self.images)})")
        return self.images[name]

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return self.core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return decode_secret(self.core.read_namespaced_secret(name, namespace).data)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def service_account_token(self, namespace: str, account: str, audience: str | None,
                              seconds: int, pod: str, uid: str) -> str:
        """A projected token, as a kubelet asks for it: TokenRequest, bound to the pod."""
        spec = {"expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}
        if audience:
            spec["audiences"] = [audience]
        answer = self.core.create_namespaced_service_account_token(
            account, namespace, {"spec": spec}, _preload_content=False)
        return json.loads(answer.data)["status"]["token"]

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        for attempt in range(20):  # the API server may be away a moment: retry, as kubelets do
            try:
                self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                      _content_type=STRATEGIC,
                                                      _preload_content=False)  # fmt: skip
                return
            except ApiException as err:
                if err.status == 404:
                    return  # deleted meanwhile
                if err.status < 500 and err.status != 409:
                    raise
            time.sleep(0.5 * (attempt + 1))

    def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> None:
        body = {"gracePeriodSeconds": 0, **({"preconditions": {"uid": uid}} if uid else {})}
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body, _preload_content=False)
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    # -- for tests ----------------------------------------------------------------------------

    def log(self, namespace: str, pod: str, container: str) -> str:
        """The container's output so far (every run of a pod of that name)."""
        return "".join(run.root.joinpath(f"{container}.log").read_text(errors="replace")
                       for run in list(self.runs.values())
                       if (run.namespace, run.name) == (namespace, pod)
                       and run.root.joinpath(f"{container}.log").exists())  # fmt: skip

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
