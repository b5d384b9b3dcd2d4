"""Prometheus metrics on /metrics. Labels stay low-cardinality: phases, reasons, hubs; never
job names or steps."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.jobs = Gauge(
            "kubetune_finetunejobs",
            "FineTuneJobs by phase, as last reconciled.",
            ["phase"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kubetune_reconcile_duration_seconds",
            "Time spent reconciling one object.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubetune_reconcile_errors_total",
            "Reconciles that ended in an error, by reason.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.hub_models_ready = Gauge(
            "kubetune_hub_models_ready",
            "Models of a hub whose source is usable.",
            ["namespace", "hub"],
            registry=self.registry,
        )
        self._phases: dict[str, str] = {}  # job uid -> phase
        for phase in PHASES:
            self.jobs.labels(phase).set(0)

    def job_phase(self, uid: str, phase: str | None) -> None:
        """Count each job once, in its latest phase (None: the job is gone)."""
        old = self._phases.pop(uid, None)
        if old is not None:
            self.jobs.labels(old).dec()
        if phase is not None:
            self._phases[uid] = phase
            self.jobs.labels(phase).inc()
