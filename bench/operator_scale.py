"""How the operator copes with many jobs: 1,000 FineTuneJobs (one hub) created at once against
the test API server (tests/support/apiserver.py, real HTTP, our CRDs enforced), with the
operator running as users run it, `kubetune operator --standalone`, in its own process.

Prints the time until every job has its PyTorchJob, the p50/p99 latency from a job's create
to its PyTorchJob, and the operator's peak RSS. Goals on 2 cores: all within 60 s, p99 under
2 s, RSS under 300 MiB. Last line: `operator_1000_jobs_seconds=<s>`.

    .venv/bin/python bench/operator_scale.py [--jobs 1000]
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, from the repo
from tests.support.apiserver import serve  # noqa: E402

NS, PLATFORM = "team-a", "ml-platform"


def hub(bucket: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelHub",
        "metadata": {"name": "curated", "namespace": PLATFORM},
        "spec": {
            "sharedWith": {"namespaces": [NS]},
            "models": [{"modelId": "llama", "source": f"s3://{bucket}/llama/"}],
        },
    }


def job(i: int) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"job-{i:04d}", "namespace": NS},
        "spec": {
            "model": {"hubRef": {"name": "curated", "namespace": PLATFORM}, "modelId": "llama"},
            "data": {"train": "s3://data/train/"},
            "output": {"uri": f"s3://out/job-{i:04d}/"},
            "resources": {"accelerator": "nvidia", "acceleratorsPerNode": 8, "nodes": 2},
        },
    }


async def trim_request_history(emulator) -> None:
    """kmock matches every request against its whole request history (`request in source`
    walks all earlier requests), so the test server slows down linearly with requests served:
    14 ms per GET after 50 jobs, 93 ms after 400. A real API server does not; keeping only the
    recent history keeps the server's cost flat and the figures about the operator."""
    while True:
        del emulator._requests[:-100]
        await asyncio.sleep(0.2)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(jobs: int, workdir: Path) -> float:
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

    async with serve(workdir) as api:
        trimming = asyncio.create_task(trim_request_history(api.emulator))
        for namespace in (PLATFORM, NS):
            await api.create_namespace(namespace)
        await api.create(hub("models"))
        env = {**os.environ, **aws, "KUBECONFIG": str(api.kubeconfig)}
        log = (workdir / "operator.log").open("w")  # kept apart from the figures
        operator = subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli.main", "operator", "--standalone",
             "--metrics-port", "0", "--health-port", "0", "--log-level", "WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            hub_ready = lambda o: o.get("status", {}).get("readyModels") == 1  # noqa: E731
            await api.wait_for("mhub", PLATFORM, "curated", hub_ready, timeout=60)
            created: dict[str, float] = {}
            seen: dict[str, float] = {}
            started = time.monotonic()

            async def create(i):
                await api.create(job(i))
                created[f"job-{i:04d}"] = time.monotonic()

            for start in range(0, jobs, 50):  # 50 concurrent creates, as a GitOps sync sends them
                await asyncio.gather(*(create(i) for i in range(start, min(start + 50, jobs))))
            deadline = started + 300
            while len(seen) < jobs and time.monotonic() < deadline:
                now = time.monotonic()
                for name in created.keys() - seen.keys():
                    if api._stored("PyTorchJob", NS, name) is not None:
                        seen[name] = now
                await asyncio.sleep(0.01)
            total = time.monotonic() - started
            rss = peak_rss_mib(operator.pid)
            served = [c for c in api.requests if "watch=true" not in c.query]
            probe = time.monotonic()
            for _ in range(20):  # the server's own cost per request, operator idle by now
                await api.get("ftj", NS, "job-0000")
            per_request = (time.monotonic() - probe) / 20
        finally:
            trimming.cancel()
            operator.terminate()
            operator.wait(timeout=30)
            s3.stop()

    latencies = sorted(seen[name] - created[name] for name in seen)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"jobs created: {jobs}; PyTorchJobs created: {len(seen)}")
    print(f"all PyTorchJobs within {total:.1f} s (goal 60 s)")
    print(f"create -> PyTorchJob latency: p50 {p50:.2f} s, p99 {p99:.2f} s (goal p99 < 2 s)")
    print(f"operator peak RSS: {rss:.0f} MiB (goal < 300 MiB)")
    print(f"API requests: {len(served)} ({len(served) / jobs:.1f} per job); the test server "
          f"answers a GET in {per_request * 1000:.0f} ms, so it alone needs "
          f"{len(served) * per_request:.0f} s of the run")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        total = asyncio.run(run(args.jobs, Path(workdir)))
    print(f"operator_{args.jobs}_jobs_seconds={total:.1f}")


if __name__ == "__main__":
    main()
