"""operator_scale.py --cluster: the same jobs against a real kube-apiserver and etcd
(tests/cluster/controlplane.py, no controllers), the operator authenticated as the chart's
ServiceAccount, so the server's own metrics tell its requests from the bench's."""

import asyncio
import collections
import json
import re
import ssl
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import yaml
from kubernetes import client
from operator_scale import cpu_seconds, peak_rss_mib, report_latency, send, start_s3
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.helm import helm_binary
from tests.cluster import build
from tests.cluster.controlplane import ControlPlane
from tests.cluster.e2e_support import token_kubeconfig
from tests.reliability.operator_runs import NS, PLATFORM, converged, hub, job
from tests.support.processes import start_operator, stop_operator

REPO = Path(__file__).resolve().parents[1]
RELEASE, SYSTEM = "kubetune", "kubetune-system"
# The default FlowSchema for every ServiceAccount outside kube-system (priority workload-low),
# as a deployed operator gets; here the operator is the only ServiceAccount that calls.
OPERATOR_FLOW = "service-accounts"
FTJS = f"/apis/kubetune.io/v1alpha1/namespaces/{NS}/finetunejobs"
HUB = f"/apis/kubetune.io/v1alpha1/namespaces/{PLATFORM}/modelhubs/curated"
PYTORCHJOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"


class Admin:
    """The bench's own requests, as the admin user: namespaces, the hub, the jobs, two watches."""

    def __init__(self, plane: ControlPlane) -> None:
        tls = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
        self.session = aiohttp.ClientSession(
            base_url=plane.server,
            connector=aiohttp.TCPConnector(ssl=tls, limit=100),
            headers={"Authorization": f"Bearer {plane.pki.admin_token}"},
            read_bufsize=2**20,  # a watch event is one line
        )

    async def create(self, path: str, obj: dict) -> None:
        async with self.session.post(path, json=obj) as response:
            if response.status != 201:
                raise RuntimeError(f"POST {path}: {response.status} {await response.text()}")

    async def get(self, path: str) -> dict:
        async with self.session.get(path) as response:
            response.raise_for_status()
            return await response.json()

    async def metrics(self) -> dict[str, collections.Counter]:
        async with self.session.get("/metrics") as response:
            return parse_metrics(await response.text())

    async def watch(self, path: str, seen: dict[str, float], holds, opened: asyncio.Event) -> None:
        """Records when an event arrives in which an object first `holds(type, object)`
        (creationTimestamp has 1 s resolution); a watch the server ends is resumed from the last
        resourceVersion."""
        version = (await self.get(path))["metadata"]["resourceVersion"]
        while True:
            params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
            async with self.session.get(path, params=params, timeout=aiohttp.ClientTimeout(
                    total=None, sock_read=None)) as response:  # fmt: skip
                response.raise_for_status()
                opened.set()
                async for line in response.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # 410 Gone: too old; list again
                        version = (await self.get(path))["metadata"]["resourceVersion"]
                        break
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK" and holds(event["type"], obj):
                        seen.setdefault(obj["metadata"]["name"], time.monotonic())


def added(kind: str, _: dict) -> bool:
    return kind == "ADDED"


def parse_metrics(text: str) -> dict[str, collections.Counter]:
    """What the figures need from kube-apiserver's /metrics: requests by (verb, resource,
    code), requests dispatched and rejected by flow schema, and APF queue wait by flow."""
    kinds = ("requests", "dispatched", "rejected", "wait", "terminated")
    found = {kind: collections.Counter() for kind in kinds}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total":
                kind = "/".join(filter(None, (labels["resource"], labels["subresource"])))
                found["requests"][(labels["verb"], kind, labels["code"])] += sample.value
            elif sample.name == "apiserver_terminated_watchers_total":  # too slow to keep up
                found["terminated"][labels["resource"]] += sample.value
            elif sample.name == "apiserver_flowcontrol_dispatched_requests_total":
                found["dispatched"][labels["flow_schema"]] += sample.value
            elif sample.name == "apiserver_flowcontrol_rejected_requests_total":
                found["rejected"][labels["flow_schema"]] += sample.value
            elif sample.name.startswith("apiserver_flowcontrol_request_wait_duration_seconds_"):
                suffix = sample.name.rsplit("_", 1)[1]  # sum, count (buckets are skipped)
                if suffix in ("sum", "count"):
                    found["wait"][(labels["flow_schema"], suffix)] += sample.value
    return found


def operator_rbac() -> list[dict]:
    """The chart's ServiceAccount, ClusterRole and ClusterRoleBinding, as helm renders them."""
    done = subprocess.run(
        [str(helm_binary()), "template", RELEASE, str(REPO / "charts" / "kubetune"),
         "--namespace", SYSTEM, "--show-only", "templates/serviceaccount.yaml",
         "--show-only", "templates/rbac.yaml"], capture_output=True, text=True, check=True)  # fmt: skip  # noqa: E501
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def operator_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    """The admin kubeconfig's server and CA with a token of the chart's ServiceAccount."""
    core = client.CoreV1Api(plane.api_client())
    token = core.create_namespaced_service_account_token(
        RELEASE, SYSTEM, {"spec": {"expirationSeconds": 7200}}
    ).status.token
    return token_kubeconfig(plane, token, path)


async def until(condition, watching: list[asyncio.Task], started: float) -> float:
    """Seconds from `started` until `condition()`, or until 300 s after `started`."""
    while not condition() and time.monotonic() < started + 300:
        for task in watching:
            if task.done():
                task.result()  # a watch failed: say why
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def run_cluster(jobs: int, rate: float, workdir: Path) -> float:
    s3, aws = start_s3()
    crds = sorted((REPO / "crds").glob("*.yaml")) + build.crd_paths()["training-operator"]
    plane = ControlPlane(components=(), crds=crds, workdir=workdir / "cluster").start()
    admin = Admin(plane)
    operator = None
    try:
        for name in (SYSTEM, PLATFORM, NS):
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            await admin.create("/api/v1/namespaces", namespace)
        plane.create(operator_rbac())
        kubeconfig = operator_kubeconfig(plane, workdir / "operator.kubeconfig")
        await admin.create(HUB.rsplit("/", 1)[0], hub("models"))
        log = workdir / "operator.log"
        api = SimpleNamespace(kubeconfig=kubeconfig)  # all start_operator reads of a server
        operator = start_operator(api, log, "--standalone",
                                  "--log-level", "WARNING", env=aws)  # fmt: skip
        deadline = time.monotonic() + 60
        while ((await admin.get(HUB)).get("status") or {}).get("readyModels") != 1:
            if time.monotonic() > deadline or operator.poll() is not None:
                raise RuntimeError(f"the hub was not ready within 60 s; see {log}")
            await asyncio.sleep(0.2)

        created: dict[str, float] = {}
        seen: dict[str, float] = {}
        done: dict[str, float] = {}  # status written: the job's requests are all made
        opened = [asyncio.Event(), asyncio.Event()]
        watching = [
            asyncio.create_task(admin.watch(PYTORCHJOBS, seen, added, opened[0])),
            asyncio.create_task(admin.watch(FTJS, done, lambda _, obj: converged(obj), opened[1])),
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), timeout=30)
        before = await admin.metrics()
        server = {p.name: p.popen.pid for p in plane.processes}
        server_cpu = {name: cpu_seconds(pid) for name, pid in server.items()}
        own_cpu = time.process_time()  # this process: S3, the bench's client and the clock
        started = time.monotonic()

        async def create(i):
            created[f"job-{i:04d}"] = time.monotonic()  # the create's own wait counts too
            await admin.create(FTJS, job(f"job-{i:04d}", "data"))

        creating = await send(jobs, rate, create, started)
        total = await until(lambda: len(seen) >= jobs, watching, started)
        rss = peak_rss_mib(operator.pid)
        # The figures go on until every job's status is written, its last request.
        await until(lambda: len(done) >= jobs, watching, started)
        operator_cpu, own_cpu = cpu_seconds(operator.pid), time.process_time() - own_cpu
        server_cpu = {name: cpu_seconds(pid) - server_cpu[name] for name, pid in server.items()}
        after = await admin.metrics()
        logged = log.stat().st_size  # what it said while it worked, not while it stops
        for task in watching:
            task.cancel()
    finally:
        if operator is not None:
            try:
                print(f"operator stopped {await stop_operator(operator):.1f} s after SIGTERM")
            except subprocess.TimeoutExpired:
                print("the operator did not stop within 30 s of SIGTERM; killed")
        await admin.session.close()
        plane.stop()
        s3.stop()

    report_latency(jobs, rate, creating, total, created, seen)
    written = max(done.values(), default=started) - started
    print(f"every job's status written within {written:.1f} s")
    print(f"operator peak RSS: {rss:.0f} MiB (goal < 300 MiB)")
    print(f"CPU: operator {operator_cpu:.1f} s in all; while jobs were created and reconciled: "
          f"kube-apiserver {server_cpu['kube-apiserver']:.1f} s, etcd {server_cpu['etcd']:.1f} s, "
          f"S3 + this bench {own_cpu:.1f} s")  # fmt: skip
    report_requests(jobs, before, after, log.read_bytes()[:logged].decode(errors="replace"))
    return total


def report_requests(jobs: int, before: dict, after: dict, log: str) -> None:
    delta = {k: after[k] - before[k] for k in after}  # Counter subtraction drops what is <= 0
    flow = delta["dispatched"][OPERATOR_FLOW]
    # By kind: every request the server finished in the run (open watches are not in it yet),
    # less the bench's creates and the server's own lease renewals.
    kinds, codes = collections.Counter(), collections.Counter()
    for (verb, kind, code), n in delta["requests"].items():
        if (verb, kind, code) == ("POST", "finetunejobs", "201"):
            n -= jobs
        if n > 0 and kind and kind != "leases":
            kinds[f"{verb} {kind}"] += n
            if not code.startswith("2"):
                codes[f"{code} {verb} {kind}"] += n
    print(
        "API requests by kind (apiserver_request_total, less the bench's creates): "
        + ", ".join(f"{k} {n:.0f}" for k, n in kinds.most_common())
    )
    print("non-2xx answers: " + (", ".join(f"{k} {n:.0f}" for k, n in codes.most_common())
                                 or "none"))  # fmt: skip
    waited = delta["wait"][(OPERATOR_FLOW, "sum")] / max(1, delta["wait"][(OPERATOR_FLOW, "count")])
    print(f"API priority and fairness, the operator's flow ({OPERATOR_FLOW}): "
          f"{delta['rejected'][OPERATOR_FLOW]:.0f} rejected (429), mean queue wait "
          f"{waited * 1000:.1f} ms")  # fmt: skip
    closed = delta["terminated"]
    print("watches the server closed as too slow to keep up: "
          + (", ".join(f"{k} {n:.0f}" for k, n in closed.most_common()) or "none"))  # fmt: skip
    problems = collections.Counter()
    for line in log.splitlines():
        parts = line.split(" ", 3)  # date, time, level, message
        if len(parts) == 4 and parts[2] in ("WARNING", "ERROR"):  # a kind: numbers blanked out
            problems[f"{parts[2]} " + re.sub(r"\d+", "N", parts[3])[:150]] += 1
    print(f"operator log until then: {sum(problems.values())} warnings and errors"
          + "".join(f"\n  {n} x {kind}" for kind, n in problems.most_common(6)))  # fmt: skip
    print(
        f"API requests: {flow:.0f} by the operator ({flow / jobs:.1f} per job; with the "
        f"job's own create, as the test server counts, {flow / jobs + 1:.1f})"
    )
