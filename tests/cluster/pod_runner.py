"""One pod of the local kubelet (kubelet.py) run as local processes: its volumes as folders, each
container's command and env as the kubelet would build them, and its status as the kubelet
reports it (phase, conditions, container statuses with exit code and termination message).

A container sees paths (/scratch, /etc/kubetune/config.json); this machine has none of them, so
each volume mount is a folder under the pod's own folder, and env values that are paths under a
mount are rewritten to that folder. The "pod network" is loopback: an env value naming a Service
of the pod's namespace becomes 127.0.0.1, and `nslookup` (tools/) answers for Services.
"""

import base64
import ctypes
import datetime
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MESSAGE_LIMIT = 4096  # kubelet: MaxContainerTerminationMessageLength
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # kubelet: FallbackToLogsOnError takes the log's tail
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class Image:
    """What an image brings to a container that runs it: ENTRYPOINT, CMD, ENV, WORKDIR."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"

    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()


def from_dockerfile(dockerfile: Path, entrypoint: list[str], path: str) -> Image:
    """An image as its Dockerfile builds it: its ENV (KEY=VALUE form) and last WORKDIR, with
    the `entrypoint` and PATH this machine runs it by."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())  # continued lines joined
    env, workdir = {}, "/"
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["ENV"]:
            env.update(pair.split("=", 1) for pair in words[1:] if "=" in pair)
        elif words[:1] == ["WORKDIR"]:
            workdir = words[1]
    return Image(entrypoint=entrypoint, env={**env, "PATH": path}, workdir=workdir)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphans if we die


class PodRun:
    """Runs one pod to its end (or until deleted), reporting status through `/status`."""

    def __init__(self, kubelet, pod: dict):
        self.kubelet, self.core = kubelet, kubelet.core
        meta = pod["metadata"]
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.spec = pod["spec"]
        self.pod = pod
        self.root = kubelet.workdir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.deleted = threading.Event()  # deletionTimestamp seen, or the pod is gone
        self.grace = self.spec.get("terminationGracePeriodSeconds", 30)
        self.processes: dict[str, subprocess.Popen] = {}
        self.statuses: dict[str, dict] = {}  # container name -> containerStatus
        self.started_at = now()
        self.conditions: dict[str, dict] = {}  # type -> condition, as last reported
        self.phase = "Pending"
        self.thread = threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "PodRun":
        self.thread.start()
        return self

    def delete(self, grace: int | None = None) -> None:
        if grace is not None:
            self.grace = min(self.grace, grace)
        self.deleted.set()

    def _run(self) -> None:
        try:
            self._run_pod()
        except Exception as err:  # noqa: BLE001 (a broken pod must not stop the kubelet)
            log.exception("pod %s/%s: the local kubelet failed", self.namespace, self.name)
            for container in self._all_containers():  # shown where a kubelet shows it
                if "terminated" not in self.statuses.get(container["name"], {}).get("state", {}):
                    self.statuses[container["name"]] = self._waiting(container, "LocalKubelet")
                    self.statuses[container["name"]]["state"]["waiting"]["message"] = str(err)
            if self.deleted.is_set():
                self._finish_deleted()
            else:
                self._report(None)
        finally:
            self._kill_all(signal.SIGKILL)

    def _run_pod(self) -> None:
        restart = self.spec.get("restartPolicy", "Always")
        if restart != "Never":  # the Training Operator's ExitCode policy renders Never
            log.warning("pod %s: restartPolicy %s run as Never", self.name, restart)
        inits, mains = self.spec.get("initContainers") or [], self.spec["containers"]
        for c in inits + mains:  # the reasons a kubelet gives before a container starts
            reason = "PodInitializing" if inits else "ContainerCreating"
            self.statuses[c["name"]] = self._waiting(c, reason)
        self._report("Pending")
        self.mounts = self._volumes()
        for container in inits:
            code = self._wait(self._start(container))[container["name"]]
            if self.deleted.is_set():
                return self._finish_deleted()
            if code != 0:
                return self._report("Failed")  # restartPolicy Never: the pod fails
        for container in mains:
            self._start(container)
        self._report("Running")
        codes = self._wait(*(c["name"] for c in mains))
        if self.deleted.is_set():
            return self._finish_deleted()
        self._report("Succeeded" if not any(codes.values()) else "Failed")

    def _wait(self, *names: str) -> dict[str, int]:
        """Until the named containers exit (each reported as it does); on deletion, SIGTERM,
        the grace period, SIGKILL."""
        pending, codes, term_sent = set(names), {}, None
        while pending:
            for name in sorted(pending):
                code = self.processes[name].poll()
                if code is not None:
                    pending.discard(name)
                    codes[name] = self._terminated(name, code)
                    if pending or term_sent:
                        self._report(None)
            if self.deleted.is_set():
                if term_sent is None:
                    term_sent = time.monotonic()
                    self._kill_all(signal.SIGTERM)
                elif time.monotonic() - term_sent > self.grace:
                    self._kill_all(signal.SIGKILL)
            time.sleep(0.2)
        return codes

    def _finish_deleted(self) -> None:
        """Containers stopped: the kubelet's final delete (grace 0) removes the pod."""
        self._kill_all(signal.SIGKILL)
        self.kubelet.delete_pod(self.namespace, self.name, self.uid)

    def _kill_all(self, sig: int) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass

    # -- volumes and containers ---------------------------------------------------------------

    def _volumes(self) -> dict[str, Path]:
        """Each volume as a folder: emptyDir empty, configMap and secret with their keys."""
        folders = {}
        for volume in self.spec.get("volumes") or []:
            folder = self.root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                source = volume["configMap"]
                data = self._wait_for(lambda s=source: self.kubelet.config_map(
                    self.namespace, s["name"]), source)  # fmt: skip
                self._write_items(folder, data, source)
            elif "secret" in volume:
                source = volume["secret"]
                data = self._wait_for(lambda s=source: self.kubelet.secret(
                    self.namespace, s["secretName"]), source)  # fmt: skip
                self._write_items(folder, data, source)
            elif "emptyDir" not in volume:
                raise NotImplementedError(f"volume {volume['name']}: only emptyDir, configMap "
                                          "and secret volumes run here")  # fmt: skip
            folders[volume["name"]] = folder
        return folders

    def _wait_for(self, read, source: dict) -> dict:
        """A missing ConfigMap or Secret holds the pod in ContainerCreating, as on a kubelet."""
        while (data := read()) is None:
            if source.get("optional"):
                return {}
            if self.deleted.wait(1):
                raise RuntimeError("deleted while waiting for its volumes")
        return data

    @staticmethod
    def _write_items(folder: Path, data: dict[str, str], source: dict) -> None:
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / item["path"]).write_text(data[item["key"]])

    def _host_path(self, container: dict, path: str) -> str:
        """The folder on this machine behind a path the container sees (longest mount wins)."""
        best = None
        for mount in container.get("volumeMounts") or []:
            at = mount["mountPath"].rstrip("/")
            if (path == at or path.startswith(at + "/")) and (not best or len(at) > len(best[0])):
                best = (at, self.mounts[mount["name"]] / mount.get("subPath", ""))
        if best is None:
            return path
        return str(best[1]) + path[len(best[0]):]

    def _start(self, container: dict) -> str:
        name = container["name"]
        image = self.kubelet.image(container["image"])
        env = self._env(container, image)
        command = container.get("command") or image.entrypoint
        args = container.get("args") or ([] if container.get("command") else image.cmd)
        argv = [_expand(a, env) for a in command + args]
        termination = self.root / f"{name}.termination-log"
        termination.write_text("")  # the kubelet mounts an empty file there
        env[self.kubelet.termination_log_env] = str(termination)
        workdir = Path(self._host_path(container, container.get("workingDir") or image.workdir))
        if not str(workdir).startswith(str(self.root)):
            workdir = self.root  # the image's own folders are not on this machine
        workdir.mkdir(parents=True, exist_ok=True)
        logfile = self.root / f"{name}.log"
        with logfile.open("ab") as out:
            self.processes[name] = subprocess.Popen(
                argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)  # fmt: skip
        started = now()
        self.statuses[name] = {
            **self._base(container), "containerID": f"local://{self.processes[name].pid}",
            "ready": True, "started": True, "state": {"running": {"startedAt": started}},
        }  # fmt: skip
        self._report(None)
        return name

    def _env(self, container: dict, image: Image) -> dict[str, str]:
        """The image's ENV, then envFrom, then env (each later one wins), as a kubelet does;
        then paths into the mounts' folders and Service names onto loopback."""
        given: dict[str, str] = {"HOSTNAME": self.spec.get("hostname") or self.name}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self.kubelet.secret(self.namespace, source["secretRef"]["name"])
            else:
                data = self.kubelet.config_map(self.namespace, source["configMapRef"]["name"])
            given.update({prefix + k: v for k, v in (data or {}).items()})
        for var in container.get("env") or []:
            if "value" in var:
                given[var["name"]] = _expand(var["value"], given)
            elif "valueFrom" in var:
                given[var["name"]] = self._value_from(var["valueFrom"])
        services = self.kubelet.service_names(self.namespace)
        env = {**image.env, **given}
        for key, value in env.items():
            if key == "PATH":  # this machine's, from the image: never a path inside the pod
                continue
            if value.startswith("/"):
                env[key] = self._host_path(container, value)
            elif value in services:
                env[key] = LOOPBACK
        env["PATH"] = f"{self.kubelet.tools}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def _value_from(self, source: dict) -> str:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                      "metadata.uid": self.uid, "spec.nodeName": self.kubelet.node,
                      "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
                      "status.podIP": LOOPBACK, "status.hostIP": LOOPBACK}  # fmt: skip
            if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
                return (self.pod["metadata"].get(match[1]) or {}).get(match[2], "")
            return fields[path]
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        read = self.kubelet.secret if "secretKeyRef" in source else self.kubelet.config_map
        return (read(self.namespace, ref["name"]) or {}).get(ref["key"], "")

    # -- status -------------------------------------------------------------------------------

    def _base(self, container: dict) -> dict:
        """What every containerStatus carries; imageID once the image is there (pulled)."""
        image = self.kubelet.images.get(container["image"])
        image_id = f"{container['image']}@sha256:{image.digest()}" if image else ""
        return {"name": container["name"], "image": container["image"], "imageID": image_id,
                "restartCount": 0, "lastState": {}}  # fmt: skip

    def _waiting(self, container: dict, reason: str) -> dict:
        return {**self._base(container), "ready": False, "started": False,
                "state": {"waiting": {"reason": reason}}}  # fmt: skip

    def _terminated(self, name: str, code: int) -> int:
        """The container's end as the kubelet reports it; 128+N for a signal, as runtimes do."""
        code = 128 - code if code < 0 else code
        container = next(c for c in self._all_containers() if c["name"] == name)
        message = (self.root / f"{name}.termination-log").read_bytes()[:MESSAGE_LIMIT]
        if not message.strip() and code and \
                container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = (self.root / f"{name}.log").read_bytes().splitlines()[-FALLBACK_LINES:]
            message = b"\n".join(lines)[-FALLBACK_BYTES:]
        running = self.statuses[name]["state"].get("running", {})
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": running.get("startedAt", now()), "finishedAt": now(),
                      "containerID": self.statuses[name]["containerID"]}  # fmt: skip
        if message.strip():
            terminated["message"] = message.decode(errors="replace")
        self.statuses[name] = {**self.statuses[name], "ready": False, "started": False,
                               "state": {"terminated": terminated}}  # fmt: skip
        return code

    def _all_containers(self) -> list[dict]:
        return (self.spec.get("initContainers") or []) + self.spec["containers"]

    def _report(self, phase: str | None) -> None:
        """PATCH /status: the phase (None: as last reported), conditions, container statuses."""
        if phase is not None:
            self.phase = phase
        inits = [c["name"] for c in self.spec.get("initContainers") or []]
        mains = [c["name"] for c in self.spec["containers"]]
        done = self.phase in ("Succeeded", "Failed")
        initialized = all("terminated" in self.statuses[n]["state"] and
                          not self.statuses[n]["state"]["terminated"]["exitCode"] for n in inits)
        unready = [n for n in mains if not self.statuses[n]["ready"]]
        not_ready = "PodCompleted" if done else "ContainersNotReady"
        for condition in (
            _condition("PodReadyToStartContainers", not done),
            _condition("Initialized", initialized, "ContainersNotInitialized",
                       f"containers with incomplete status: {inits}"),
            _condition("ContainersReady", not unready, not_ready,
                       f"containers with unready status: {unready}"),
            _condition("Ready", not unready, not_ready,
                       f"containers with unready status: {unready}"),
        ):  # fmt: skip
            before = self.conditions.get(condition["type"])
            if before and before["status"] == condition["status"]:  # no transition
                condition["lastTransitionTime"] = before["lastTransitionTime"]
            self.conditions[condition["type"]] = condition
        status = {
            "phase": self.phase, "conditions": list(self.conditions.values()),
            "startTime": self.started_at,
            "hostIP": LOOPBACK, "hostIPs": [{"ip": LOOPBACK}],
            "podIP": LOOPBACK, "podIPs": [{"ip": LOOPBACK}],
            "containerStatuses": [self.statuses[n] for n in mains],
        }  # fmt: skip
        if inits:
            status["initContainerStatuses"] = [self.statuses[n] for n in inits]
        self.kubelet.patch_status(self.namespace, self.name, status)


def _condition(kind: str, true: bool, reason: str | None = None, message: str = "") -> dict:
    found = {"type": kind, "status": "True" if true else "False", "lastTransitionTime": now()}
    if not true and reason:
        found.update(reason=reason, message=message)
    return found


def _expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) references to variables defined before, as the kubelet expands them; $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)  # fmt: skip


def decode_secret(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}
