"""One pod of the local kubelet (kubelet.py) run as local processes: its volumes as folders, each
container's command and env as the kubelet would build them, and its status as the kubelet
reports it (phase, conditions, container statuses with exit code and termination message).

A container sees paths (/scratch, /etc/kubetune/config.json); this machine has none of them, so
each volume mount is a folder under the pod's own folder, and env values that are paths under a
mount are rewritten to that folder. The "pod network" is loopback: an env value naming what the
cluster DNS answers for (a Service, a pod under a headless Service; cluster_dns.py), alone or as
the host of a URL, becomes 127.0.0.1, and `nslookup` (tools/) answers for those names.
"""

import base64
import ctypes
import datetime
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster.cluster_dns import LOOPBACK
from tests.cluster.images import Image

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 4096  # kubelet: MaxContainerTerminationMessageLength
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # kubelet: FallbackToLogsOnError takes the log's tail
STRATEGIC = "application/strategic-merge-patch+json"


class ContainerConfigError(RuntimeError):
    """What keeps a kubelet from creating a container (reason CreateContainerConfigError)."""


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
            log.warning("pod %s/%s: the local kubelet failed: %s", self.namespace, self.name, err,
                        exc_info=not isinstance(err, ContainerConfigError))
            reason = "CreateContainerConfigError" if isinstance(
                err, ContainerConfigError) else "LocalKubelet"
            for container in self._all_containers():  # shown where a kubelet shows it
                if "terminated" not in self.statuses.get(container["name"], {}).get("state", {}):
                    self.statuses[container["name"]] = self._waiting(container, reason)
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
        """Each volume as a folder: emptyDir empty, configMap, secret, downwardAPI and projected
        (those, and service-account tokens by TokenRequest) with their files."""
        folders = {}
        for volume in self.spec.get("volumes") or []:
            folder = self.root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            sources = (volume["projected"].get("sources") or []) if "projected" in volume \
                else [volume]
            for source in sources:
                self._project(folder, source, volume["name"])
            folders[volume["name"]] = folder
        return folders

    def _project(self, folder: Path, source: dict, name: str) -> None:
        if "configMap" in source:
            ref = source["configMap"]
            data = self._wait_for(lambda: self.kubelet.config_map(self.namespace, ref["name"]), ref)
            self._write_items(folder, data, ref)
        elif "secret" in source:
            ref = source["secret"]
            secret = ref.get("secretName") or ref["name"]  # volume or projection
            data = self._wait_for(lambda: self.kubelet.secret(self.namespace, secret), ref)
            self._write_items(folder, data, ref)
        elif "downwardAPI" in source:
            items = source["downwardAPI"].get("items") or []
            data = {item["path"]: self._field(item["fieldRef"]["fieldPath"]) for item in items}
            self._write_items(folder, data, {})
        elif "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            (folder / token["path"]).write_text(self.kubelet.service_account_token(
                self.namespace, self.spec.get("serviceAccountName") or "default",
                token.get("audience"), token.get("expirationSeconds", 3600), self.name, self.uid))
        elif "emptyDir" not in source:
            raise NotImplementedError(f"volume {name}: only emptyDir, configMap, secret, "
                                      "downwardAPI and projected volumes run here")

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
        then paths into the mounts' folders and cluster names (cluster_dns.py) onto loopback."""
        given: dict[str, str] = {"HOSTNAME": self.spec.get("hostname") or self.name}
        for source in container.get("envFrom") or []:
            prefix, ref = source.get("prefix", ""), source.get("secretRef") or source[
                "configMapRef"]
            data = self._source("secretRef" in source, ref["name"], ref.get("optional"))
            given.update({prefix + k: v for k, v in (data or {}).items()})
        for var in container.get("env") or []:
            if "value" in var:
                given[var["name"]] = _expand(var["value"], given)
            elif "valueFrom" in var and (value := self._value_from(var["valueFrom"])) is not None:
                given[var["name"]] = value
        env = {**image.env, **given}
        for key, value in env.items():
            if key == "PATH":  # this machine's, from the image: never a path inside the pod
                continue
            if value.startswith("/"):
                env[key] = self._host_path(container, value)
            else:
                env[key] = self.kubelet.names.onto_loopback(value, self.namespace)
        env["PATH"] = f"{self.kubelet.tools}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def _value_from(self, source: dict) -> str | None:
        """The value, or None (the variable is not set) for an optional key that is missing."""
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        secret = "secretKeyRef" in source
        ref = source["secretKeyRef" if secret else "configMapKeyRef"]
        data = self._source(secret, ref["name"], ref.get("optional"))
        if ref["key"] in (data or {}):
            return data[ref["key"]]
        if ref.get("optional"):
            return None
        kind = "Secret" if secret else "ConfigMap"
        raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} "
                                   f"{self.namespace}/{ref['name']}")

    def _source(self, secret: bool, name: str, optional: bool | None) -> dict[str, str] | None:
        data = (self.kubelet.secret if secret else self.kubelet.config_map)(self.namespace, name)
        if data is None and not optional:  # a kubelet retries; here the container never starts
            raise ContainerConfigError(f'{"secret" if secret else "configmap"} "{name}" not found')
        return data

    def _field(self, path: str) -> str:
        """A downward-API field (env fieldRef, downwardAPI volume items)."""
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": self.kubelet.node,
                  "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
                  "status.podIP": LOOPBACK, "status.hostIP": LOOPBACK}  # fmt: skip
        if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
            return (self.pod["metadata"].get(match[1]) or {}).get(match[2], "")
        return fields[path]

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
