"""The training job kinds kubetune can create, by kind: where each is served, how it is
rendered, and where its suspend flag and trainer container are. One FineTuneJob API on top."""

from collections.abc import Callable
from dataclasses import dataclass

from kubetune.render import pytorchjob, trainjob


@dataclass(frozen=True)
class Backend:
    kind: str
    group: str
    version: str
    plural: str
    render: Callable  # (plan, config, owner) -> dict
    unsupported: Callable  # (plan) -> lines naming the spec fields this kind cannot carry
    container: str  # the trainer container in its pods
    suspend_path: tuple[str, ...]  # where in the object spec.suspend lives

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def suspended(self, body: dict) -> bool:
        found = body
        for key in self.suspend_path:
            found = (found or {}).get(key)
        return bool(found)

    def suspend_patch(self, suspend: bool) -> dict:
        patch: dict = {self.suspend_path[-1]: suspend}
        for key in reversed(self.suspend_path[:-1]):
            patch = {key: patch}
        return patch


TRAINJOB = Backend(
    "TrainJob",
    trainjob.GROUP,
    trainjob.VERSION,
    "trainjobs",
    trainjob.render_trainjob,
    trainjob.unsupported,
    trainjob.NODE,
    ("spec", "suspend"),
)
PYTORCHJOB = Backend(
    "PyTorchJob",
    "kubeflow.org",
    "v1",
    "pytorchjobs",
    pytorchjob.render_pytorchjob,
    lambda plan: [],
    pytorchjob.CONTAINER,
    ("spec", "runPolicy", "suspend"),
)
BACKENDS = {b.kind: b for b in (TRAINJOB, PYTORCHJOB)}
BY_SETTING = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}  # OperatorConfig.training_backend


def choose(setting: str, served: set[str]) -> Backend:
    """The backend new jobs get: the one named, or for `auto` TrainJob where the cluster serves
    it, else PyTorchJob (also when it serves neither: jobs then say what is missing)."""
    if setting != "auto":
        return BY_SETTING[setting]
    return TRAINJOB if TRAINJOB.kind in served else PYTORCHJOB


def of(body: dict) -> Backend:
    return BACKENDS[body["kind"]]
