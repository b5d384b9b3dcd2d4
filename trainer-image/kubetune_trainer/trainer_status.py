"""Progress pushed to Kubeflow Trainer's status endpoint, so `kubectl get trainjob` shows it too.

Only where Trainer's TrainJobStatus feature gate is on: it then gives the trainer container
KUBEFLOW_TRAINER_SERVER_URL, _CA_CERT (a file) and _TOKEN (a projected service account token
file, rotated by the kubelet, so read for every push). progress.json stays the record the
operator reads; a push that fails is logged once and never stops or slows training: pushes run
on a thread of their own, the newest state replacing one not yet sent.
"""

import datetime
import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubetune.api.v1alpha1 import ProgressReport

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
METRICS = ("train_loss", "eval_loss", "tokens_per_second")  # ProgressReport fields sent


@dataclass(frozen=True)
class Endpoint:
    url: str  # .../namespaces/NS/trainjobs/NAME/status: it names no secret
    ca_file: Path
    token_file: Path

    @classmethod
    def from_env(cls, env) -> "Endpoint | None":
        url = env.get("KUBEFLOW_TRAINER_SERVER_URL")
        if not url:
            return None
        return cls(
            url,
            Path(env.get("KUBEFLOW_TRAINER_SERVER_CA_CERT", "")),
            Path(env.get("KUBEFLOW_TRAINER_SERVER_TOKEN", "")),
        )


def payload(report: ProgressReport, now: datetime.datetime) -> dict:
    """Trainer's UpdateTrainJobStatusRequest from what progress.json holds."""
    status: dict = {"lastUpdatedTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if report.percent is not None:
        status["progressPercentage"] = 100 if report.done else report.percent
    if report.eta_seconds is not None:
        status["estimatedRemainingSeconds"] = report.eta_seconds
    figures = {name: getattr(report, name) for name in METRICS}
    metrics = [
        {"name": name, "value": f"{value:.4g}"}
        for name, value in figures.items()
        if value is not None
    ]
    if metrics:
        status["metrics"] = metrics
    return {"trainerStatus": status}


class StatusPusher:
    """Sends the latest progress to the endpoint in the background."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._latest: dict | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._reported: set[str] = set()  # failures already logged
        self._thread = threading.Thread(target=self._run, name="trainer-status", daemon=True)
        self._thread.start()

    def push(self, report: ProgressReport) -> None:
        body = payload(report, datetime.datetime.now(datetime.UTC))
        with self._wake:
            self._latest = body
            self._wake.notify()

    def close(self, timeout: float = TIMEOUT_SECONDS) -> None:
        """Sends what is pending (the final state), then stops."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and not self._closed:
                    self._wake.wait()
                body, self._latest = self._latest, None
                closed = self._closed
            if body is not None:
                self._send(body)
            if closed and body is None:
                return

    def _send(self, body: dict) -> None:
        try:
            token = self.endpoint.token_file.read_text().strip()
            context = ssl.create_default_context(cafile=str(self.endpoint.ca_file))
            request = urllib.request.Request(
                self.endpoint.url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context):
                pass
        except urllib.error.HTTPError as err:
            self._failed(f"answered {err.code} {err.reason}")
        except (OSError, ssl.SSLError, ValueError) as err:
            self._failed(" ".join(str(getattr(err, "reason", None) or err).split()))

    def _failed(self, why: str) -> None:
        if why not in self._reported:  # once per kind of failure: no log line per step
            self._reported.add(why)
            log.warning("progress not pushed to Kubeflow Trainer (%s): %s", self.endpoint.url, why)
