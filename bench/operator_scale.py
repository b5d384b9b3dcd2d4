"""How the operator copes with many jobs: 1,000 FineTuneJobs (one hub) created at once against
the test API server (tests/support/apiserver.py, real HTTP, our CRDs enforced), or with
`--cluster` against a real kube-apiserver and etcd (operator_scale_cluster.py), with the
operator running as users run it, `kubetune operator --standalone`, in its own process.

Prints the time until every job has its PyTorchJob, the p50/p99 latency from a job's create
to its PyTorchJob, and the operator's peak RSS. Goals on 2 cores: all within 60 s, p99 under
2 s, RSS under 300 MiB. Last line: `operator_1000_jobs_seconds=<s>`.

    .venv/bin/python bench/operator_scale.py [--cluster] [--jobs 1000] [--rate JOBS_PER_SECOND]
"""

import argparse
import asyncio
import collections
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, from the repo
from tests.reliability.operator_runs import NS, PLATFORM, hub, job  # noqa: E402
from tests.support.apiserver import serve  # noqa: E402
from tests.support.processes import start_operator, stop_operator  # noqa: E402


def request_kind(path: str) -> str:
    """`/apis/kubetune.io/v1alpha1/namespaces/team-a/finetunejobs/job-0001/status` ->
    `finetunejobs/status`: the resource (and subresource) a request was about."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2 + (parts[0] == "apis") :]
    return "/".join(parts[:1] + parts[2:3])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


def start_s3() -> tuple[ThreadedMotoServer, dict[str, str]]:
    """moto S3 in this process with the hub's model and the jobs' data; the AWS_* env for it
    (also set in os.environ)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: a line per request
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    aws = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(aws)
    boto3.client("s3").create_bucket(Bucket="models")
    boto3.client("s3").put_object(Bucket="models", Key="llama/config.json", Body=b"{}")
    boto3.client("s3").create_bucket(Bucket="data")  # every job's data check lists it
    boto3.client("s3").put_object(Bucket="data", Key="train/data.csv", Body=b"text\nhi\n")
    return s3, aws


async def send(jobs: int, rate: float, create, started: float) -> float:
    """Creates `jobs` jobs with `create(i)`: a steady `rate` a second, or bursts of 50
    concurrent creates, as a GitOps sync sends them. Returns the seconds creating took."""
    if rate:  # a steady stream: the latency of one job when the operator keeps up
        sent = []  # each on time, whether or not the server has answered the last one
        for i in range(jobs):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            sent.append(asyncio.create_task(create(i)))
        await asyncio.gather(*sent)
    else:
        for start in range(0, jobs, 50):
            await asyncio.gather(*(create(i) for i in range(start, min(start + 50, jobs))))
    return time.monotonic() - started


def report_latency(jobs: int, rate: float, creating: float, total: float,
                   created: dict[str, float], seen: dict[str, float]) -> None:  # fmt: skip
    latencies = sorted(seen[name] - created[name] for name in seen)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    how = f"{rate:g} a second" if rate else "50 at a time"
    print(f"jobs created: {jobs} (in {creating:.1f} s, {how}); PyTorchJobs: {len(seen)}")
    print(f"all PyTorchJobs within {total:.1f} s (goal 60 s)")
    print(f"create -> PyTorchJob latency: p50 {p50:.2f} s, p99 {p99:.2f} s (goal p99 < 2 s)")


async def run(jobs: int, rate: float, workdir: Path) -> float:
    s3, aws = start_s3()
    # kmock matches each request against its request history, so its cost grows with requests
    # served; a real API server's does not. A short history keeps the server's cost flat and
    # the figures about the operator.
    async with serve(workdir, short_history=True) as api:
        for namespace in (PLATFORM, NS):
            await api.create_namespace(namespace)
        await api.create(hub("models"))
        # Its log is kept apart from the figures.
        operator = start_operator(api, workdir / "operator.log", "--standalone",
                                  "--log-level", "WARNING", env=aws)  # fmt: skip
        try:
            hub_ready = lambda o: o.get("status", {}).get("readyModels") == 1  # noqa: E731
            await api.wait_for("mhub", PLATFORM, "curated", hub_ready, timeout=60)
            own_cpu = time.process_time()  # this process: the test server, S3 and the clock
            created: dict[str, float] = {}
            seen: dict[str, float] = {}
            started = time.monotonic()

            async def create(i):
                created[f"job-{i:04d}"] = time.monotonic()  # the create's own wait counts too
                await api.create(job(f"job-{i:04d}", "data"))

            async def watch_children():
                while len(seen) < jobs:
                    now = time.monotonic()
                    for name in api.names("PyTorchJob", NS) - seen.keys():
                        seen[name] = now
                    await asyncio.sleep(0.02)

            watching = asyncio.create_task(watch_children())
            creating = await send(jobs, rate, create, started)
            try:
                await asyncio.wait_for(watching, timeout=max(1.0, started + 300 - time.monotonic()))
            except TimeoutError:
                pass
            total = time.monotonic() - started
            rss = peak_rss_mib(operator.pid)
            operator_cpu, own_cpu = cpu_seconds(operator.pid), time.process_time() - own_cpu
            served = [c for c in api.requests if "watch=true" not in c.query]
        finally:
            try:
                print(f"operator stopped {await stop_operator(operator):.1f} s after SIGTERM")
            except subprocess.TimeoutExpired:
                print("the operator did not stop within 30 s of SIGTERM; killed")
            s3.stop()

    report_latency(jobs, rate, creating, total, created, seen)
    print(f"operator peak RSS: {rss:.0f} MiB (goal < 300 MiB)")
    print(
        f"CPU: operator {operator_cpu:.1f} s in all; test API server + S3 + this bench "
        f"{own_cpu:.1f} s while jobs were created and reconciled"
    )
    kinds = collections.Counter(f"{c.method} {request_kind(c.path)}" for c in served)
    print("API requests by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    print(f"API requests: {len(served)} ({len(served) / jobs:.1f} per job)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=0, help="create this many jobs a second (default: bursts)"
    )
    parser.add_argument(
        "--cluster", action="store_true",
        help="against a real kube-apiserver and etcd (tests/cluster; built from Go if missing)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.cluster:
        from operator_scale_cluster import run_cluster  # imports kubernetes: only when used

    with tempfile.TemporaryDirectory() as workdir:
        bench = run_cluster if args.cluster else run
        total = asyncio.run(bench(args.jobs, args.rate, Path(workdir)))
    print(f"operator_{args.jobs}_jobs_seconds={total:.1f}")


if __name__ == "__main__":
    main()
