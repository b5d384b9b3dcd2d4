"""The operator under faults, run as users run it (`kubetune operator --standalone`, its own
process) against the test API server (real HTTP, our CRDs enforced; tests/support/apiserver.py)
and a moto S3 server: SIGKILLed and restarted at random moments while jobs are created, and
the API server answering 500, 409 or slowly for a while (api_faults.py says what exactly).

Random moments come from a seed, printed and recorded as a figure; KUBETUNE_FAULT_SEED=<n>
replays a run's kill and fault schedule (the operator's own timing still varies). The `soak`
variants (`make soak`) run longer: more restarts and jobs, and minute-long outages.
"""

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

from tests.reliability.api_faults import FaultGate, Window, serve_with_faults
from tests.reliability.operator_runs import (
    PYTORCHJOBS,
    OperatorProcess,
    assert_one_child_each,
    cluster_with_hub,
    create_all,
    first_child,
    hub_ready,
    job,
    job_named,
    until_converged,
    watching,
)
from tests.support.s3 import (  # noqa: F401 (fixtures, requested by name)
    make_bucket,
    s3_endpoint_fixture,
    s3_server_fixture,
)

pytestmark = pytest.mark.asyncio

CONVERGE_TIMEOUT_S = 150  # generous: 2 shared cores, and kopf retries a failed handler in 60 s


def seed(figures, label: str) -> random.Random:
    value = int(os.environ.get("KUBETUNE_FAULT_SEED") or random.randrange(2**31))
    print(f"{label}: fault seed {value} (KUBETUNE_FAULT_SEED={value} replays this schedule)")
    figures.record(f"{label}: seed", value)
    return random.Random(value)


@pytest.fixture
def buckets(s3_endpoint) -> tuple[str, str]:
    """(models, data): the hub's model, and every job's training data."""
    models, data = make_bucket(), make_bucket()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=models, Key="llama/config.json", Body=b"{}")
    s3.put_object(Bucket=data, Key="train/data.csv", Body=b"text\nhello\n")
    return models, data


# ----- 1. SIGKILL and restart while jobs are created ---------------------------------------------


async def kill_and_restart(tmp_path: Path, buckets: tuple[str, str], figures, *, label: str,
                           jobs: int, restarts: int, longest_life: float) -> None:  # fmt: skip
    rng = seed(figures, label)
    models, data = buckets
    names = [f"job-{i:03d}" for i in range(jobs)]
    # Each run of the operator lives from 0.5 s to `longest_life` before its SIGKILL: it sends
    # its first request about 1.3 s after its start and reconciles a job in about 0.3 s, so
    # kills land in startup, discovery, mid-reconcile (between the ConfigMap and the
    # PyTorchJob, or the PyTorchJob and the status patch) and at rest.
    lifetimes = [rng.uniform(0.5, longest_life) for _ in range(restarts)]
    # The creates come at random moments over the first 80% of the kill phase.
    create_at = sorted(rng.uniform(0, 0.8 * sum(lifetimes)) for _ in names)
    async with serve_with_faults(tmp_path, rng.randrange(2**31)) as (api, _):
        await cluster_with_hub(api, models)
        operator = OperatorProcess(api, tmp_path)

        async def create_jobs() -> None:
            started = time.monotonic()
            for name, at in zip(names, create_at, strict=True):
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                await api.create(job(name, data))

        creating = asyncio.create_task(create_jobs())
        try:
            for lifetime in lifetimes:
                operator.start()
                await asyncio.sleep(lifetime)
                operator.kill()
            await creating
            operator.start()
            timeout = max(CONVERGE_TIMEOUT_S, 1.5 * jobs)
            converge_s = await until_converged(api, names, timeout)
            await asyncio.sleep(2)  # time for a late duplicate create to show
        finally:
            creating.cancel()
            await operator.stop()
        creates = assert_one_child_each(api, names)
    figures.record(f"{label}: restarts (SIGKILL, then start)", restarts)
    figures.record(f"{label}: jobs", jobs)
    figures.record(f"{label}: PyTorchJobs created (201)", creates[("PyTorchJob", 201)])
    figures.record(f"{label}: PyTorchJob creates answered 409 (adopted)",
                   creates[("PyTorchJob", 409)])  # fmt: skip
    figures.record(f"{label}: ConfigMap creates answered 409 (adopted)",
                   creates[("ConfigMap", 409)])  # fmt: skip
    figures.record(f"{label}: duplicate PyTorchJobs", creates[("PyTorchJob", 201)] - jobs)
    figures.record(f"{label}: seconds to converge after the last restart", round(converge_s, 1))


async def test_sigkill_restarts_while_jobs_are_created(tmp_path, buckets, figures):
    # The spec's 20 restarts and 50 jobs; lives of 0.5-3 s keep the file under 3 minutes.
    await kill_and_restart(tmp_path, buckets, figures, label="restarts",
                           jobs=50, restarts=20, longest_life=3.0)  # fmt: skip


@pytest.mark.soak
async def test_sigkill_restarts_soak(tmp_path, buckets, figures):
    await kill_and_restart(tmp_path, buckets, figures, label="soak restarts",
                           jobs=200, restarts=50, longest_life=6.0)  # fmt: skip


# ----- 2. The API server failing, conflicting and slow for a while -----------------------------

WINDOW_S = 4.0  # each fault window
# What one job costs when all goes well: bench/operator_scale.py counts 7.0 requests per job
# (9.3 before hubs and PyTorchJobs came from indexes); kept at 10 for headroom.
HEALTHY_PER_JOB = 10
# The bound during a fault, per job in play (created by then) per fault-second. A well-behaved
# operator retries a failed request only after a backoff of 1 s or more: kopf's own requests
# after 1, 2, 5, 10, 30 s (settings.networking.error_backoffs), a failed handler after 5 s
# (our TemporaryError, API errors included) or 60 s (kopf's default for other exceptions), a
# failed event after 1, 1, 2, 3 ... s (kopf's throttling). So a job's failing work runs at most
# once per second: at most one healthy path per fault-second, and ever less as the backoffs
# grow. A hot loop retries at once: a 500 is answered in about a millisecond here, so one
# looping job alone sends hundreds a second; the per-job bound below catches even one among 50.
MAX_PER_JOB_SECOND = HEALTHY_PER_JOB
# Requests naming one job (its FineTuneJob or PyTorchJob) per fault-second: one reconcile
# names its job about 4 times (kopf's PATCHes, GET PyTorchJob, a GET after a 409 create).
MAX_NAMING_ONE_JOB_PER_SECOND = 5


def every(raw) -> bool:
    return True


def creates(raw) -> bool:
    return raw.method == "POST"


def writes(raw) -> bool:
    return raw.method in ("POST", "PATCH", "PUT", "DELETE")


FAULTS = (  # (kind, fraction of the operator's requests, which ones, drop watches), in turn
    ("500", 1.0, every, True),  # an outage: watches dropped, every request fails
    ("409", 1.0, creates, False),  # each create done, but its answer lost: 409 AlreadyExists
    ("delay", 1.0, every, False),  # an overloaded API server: every request waits 2 s first
)


async def test_api_faults_back_off_and_converge(tmp_path, buckets, figures):
    rng = seed(figures, "api faults")
    models, data = buckets
    per_window = 17
    names = [f"job-{i:03d}" for i in range(per_window * len(FAULTS))]
    async with serve_with_faults(tmp_path, rng.randrange(2**31)) as (api, gate):
        await cluster_with_hub(api, models)
        operator = OperatorProcess(api, tmp_path)
        operator.start()
        try:
            await hub_ready(api)
            windows, converging = [], []
            for n, (kind, fraction, applies, drop_watches) in enumerate(FAULTS):
                await watching(gate, "finetunejobs")  # back from the last outage, if any
                batch = names[n * per_window : (n + 1) * per_window]
                await create_all(api, batch, data)
                # The window opens as the first of them gets its PyTorchJob: some done, some
                # mid-reconcile (the operator's API calls fail, not only kopf's), some queued.
                await first_child(api, batch)
                async with gate.fault(kind, WINDOW_S, fraction, applies) as window:
                    dropped = gate.cut_watches() if drop_watches else 0
                windows.append((window, (n + 1) * per_window, dropped))
                converge = until_converged(api, batch, CONVERGE_TIMEOUT_S)
                converging.append(asyncio.create_task(converge))
            converge_s = await asyncio.gather(*converging)
            converged_at = time.monotonic()
            await asyncio.sleep(3)  # converged and idle: no request storm may follow
            assert operator.alive()
        finally:
            await operator.stop()
        assert_one_child_each(api, names)

    for (window, in_play, dropped), batch_s in zip(windows, converge_s, strict=True):
        check_window(gate, window, in_play, figures)
        figures.record(f"{window.kind}: seconds to converge after the window", round(batch_s, 1))
        if dropped:
            figures.record(f"{window.kind}: watch connections dropped as it opened", dropped)
    # After the faults, a job costs at most its healthy path twice: the retry that finds some
    # of its work done (children adopted) and the rest.
    after = gate.seen(windows[-1][0].closed, converged_at)
    assert len(after) <= 2 * HEALTHY_PER_JOB * len(names), Counter(s.path for s in after)
    quiet = gate.seen(converged_at, converged_at + 3)
    naming = Counter(name for s in quiet if (name := job_named(s.path)))
    # Idle, a job is touched only by its timer (every 30 s): one reconcile, a few requests.
    assert max(naming.values(), default=0) <= 5, naming.most_common(3)
    assert len(quiet) <= HEALTHY_PER_JOB * len(names), Counter(s.path for s in quiet)
    figures.record("fault window (s)", WINDOW_S)
    figures.record("jobs (17 created just before each window)", len(names))
    figures.record("requests per job from the last window's end to all converged",
                   round(len(after) / len(names), 1))  # fmt: skip
    figures.record("requests in the 3 s after all converged", len(quiet))


def check_window(gate: FaultGate, window: Window, in_play: int, figures, label: str = "") -> None:
    """The request-rate bounds during a window, with `in_play` jobs created by then."""
    kind, fault_s = window.kind, window.closed - window.opened
    label = label or kind
    seen = gate.seen(window.opened, window.closed)
    per_job_second = len(seen) / in_play / fault_s
    naming = Counter(name for s in seen if (name := job_named(s.path)))
    busiest = max(naming.values(), default=0) / fault_s
    assert per_job_second <= MAX_PER_JOB_SECOND, (kind, Counter(s.path for s in seen))
    assert busiest <= MAX_NAMING_ONE_JOB_PER_SECOND, (kind, naming.most_common(3))
    figures.record(f"{label}: faults injected", sum(1 for s in seen if s.fault == kind))
    figures.record(f"{label}: operator requests in the window", len(seen))
    figures.record(f"{label}: requests per job in play per fault-second", round(per_job_second, 2))
    figures.record(f"{label}: most requests naming one job per fault-second", round(busiest, 2))


@pytest.mark.soak
async def test_minute_long_outage_soak(tmp_path, buckets, figures):
    """Every request fails for 60 s, watches dropped. kopf gives up on its watches once
    error_backoffs (1+2+5+10+30 s) run out and the process exits; a Deployment starts it
    again, as the loop below does, and the restarted operator resumes every job."""
    rng = seed(figures, "outage")
    models, data = buckets
    names = [f"job-{i:03d}" for i in range(50)]
    async with serve_with_faults(tmp_path, rng.randrange(2**31)) as (api, gate):
        await cluster_with_hub(api, models)
        operator = OperatorProcess(api, tmp_path)
        operator.start()
        restarts = 0

        async def deployment() -> None:  # restartPolicy: Always (without kubelet's backoff)
            nonlocal restarts
            while True:
                await asyncio.sleep(1)
                if not operator.alive():
                    restarts += 1
                    operator.start()

        keeping = asyncio.create_task(deployment())
        try:
            await hub_ready(api)
            await create_all(api, names, data)
            await first_child(api, names)
            async with gate.fault("500", 60.0, 1.0, every):
                figures.record("outage: watch connections dropped", gate.cut_watches())
            converge_s = await until_converged(api, names, CONVERGE_TIMEOUT_S)
        finally:
            keeping.cancel()
            await operator.stop()
        assert_one_child_each(api, names)
    figures.record("outage: seconds of 500s", 60)
    figures.record("outage: faults injected", gate.injected["500"])
    figures.record("outage: operator exits (restarted as by a Deployment)", restarts)
    figures.record("outage: seconds to converge after it", round(converge_s, 1))


@pytest.mark.soak
async def test_failed_child_creates_are_retried_soak(tmp_path, buckets, figures):
    """The operator's own calls failing (not kopf's): every PyTorchJob create answered 500 for
    4 s. The handler's ApiException goes to kopf, which retries it after its default backoff
    (settings.execution.default_backoff, 60 s); the figure shows what that costs a job."""
    rng = seed(figures, "failed creates")
    models, data = buckets
    names = [f"job-{i:03d}" for i in range(10)]
    warm_up = "warm-up"  # converged first: the operator's hub index has the hub's status
    pytorchjob_creates = lambda raw: raw.method == "POST" and raw.path == PYTORCHJOBS  # noqa: E731
    async with serve_with_faults(tmp_path, rng.randrange(2**31)) as (api, gate):
        await cluster_with_hub(api, models)
        operator = OperatorProcess(api, tmp_path)
        operator.start()
        try:
            await hub_ready(api)
            await create_all(api, [warm_up], data)
            await until_converged(api, [warm_up], CONVERGE_TIMEOUT_S)
            async with gate.fault("500", WINDOW_S, 1.0, pytorchjob_creates) as window:
                await create_all(api, names, data)
            converge_s = await until_converged(api, names, CONVERGE_TIMEOUT_S)
        finally:
            await operator.stop()
        assert_one_child_each(api, [warm_up, *names])
    check_window(gate, window, len(names), figures, "failed creates")
    figures.record("failed creates: seconds to converge after the window", round(converge_s, 1))


# ----- 3. Write failures on a new job's first PATCH do not strand it ---------------------------
# kopf drops the event whose PATCH failed (a 409, or a 5xx past its retries) and no other comes;
# the refresh timer, which covers every unfinished job from first sight, picks such a job up.


async def strand(tmp_path, buckets, figures, *, label: str, kind: str, seconds: float,
                 applies) -> None:  # fmt: skip
    """Jobs created while their writes fail; healthy again, they must all converge."""
    rng = seed(figures, label)
    models, data = buckets
    names = [f"job-{i:03d}" for i in range(5)]
    config = tmp_path / "operator.yaml"
    config.write_text("progressIntervalSeconds: 2\n")  # a timer that could pick up the dropped
    async with serve_with_faults(tmp_path, rng.randrange(2**31)) as (api, gate):
        await cluster_with_hub(api, models)
        operator = OperatorProcess(api, tmp_path, "--config", str(config))
        operator.start()
        try:
            await hub_ready(api)
            async with gate.fault(kind, seconds, 1.0, applies):
                await create_all(api, names, data)
            figures.record(f"{label}: faults injected", gate.injected[kind])
            # Healthy, they converge in about a second; the timer runs every 2 s.
            await until_converged(api, names, timeout=15)
        finally:
            await operator.stop()


def job_patches(raw) -> bool:
    return raw.method == "PATCH" and "/finetunejobs/" in raw.path


async def test_conflicts_on_new_jobs_do_not_strand_them(tmp_path, buckets, figures):
    await strand(tmp_path, buckets, figures, label="409 on FineTuneJob PATCHes for 2 s",
                 kind="409", seconds=2.0, applies=job_patches)  # fmt: skip


@pytest.mark.soak
async def test_a_minute_of_failing_writes_does_not_strand_jobs_soak(tmp_path, buckets, figures):
    # Reads work, writes fail: etcd out of space, or an admission webhook timing out.
    await strand(tmp_path, buckets, figures, label="500 on every write for 60 s",
                 kind="500", seconds=60.0, applies=writes)  # fmt: skip
