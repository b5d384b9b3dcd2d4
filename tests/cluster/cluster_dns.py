"""The names the cluster DNS would answer for, on a machine whose "pod network" is loopback: a
Service's (`svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`), and a pod's under a headless Service
it names as its subdomain (`host.svc`, `host.svc.ns`, ...: JobSet pods reach their leader as
`<jobset>-<job>-0-0.<jobset>`). The local kubelet (kubelet.py) resolves them all to 127.0.0.1:
in env values (pod_runner.py) and for `nslookup` (the hosts patterns below)."""

import re
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
SUFFIXES = (("svc", "cluster", "local"), ("svc",))  # a qualified name ends so, or not at all
# scheme://host[:port]/... or host:port, where the host may name a Service
_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://)?(?P<host>[A-Za-z0-9.-]+)(?P<tail>(:\d+)?(/.*)?)")


@dataclass
class ClusterNames:
    services: dict[str, set[str]] = field(default_factory=dict)  # namespace -> Service names
    headless: dict[str, set[str]] = field(default_factory=dict)  # namespace -> clusterIP None

    @classmethod
    def from_services(cls, items: list[dict]) -> "ClusterNames":
        names = cls()
        for svc in items:
            name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
            names.services.setdefault(ns, set()).add(name)
            if (svc.get("spec") or {}).get("clusterIP") == "None":
                names.headless.setdefault(ns, set()).add(name)
        return names

    def resolves(self, name: str, namespace: str) -> bool:
        """Whether a pod in `namespace` resolves `name` (its search path is `<namespace>.svc...`,
        `svc...`, so a Service of another namespace needs that namespace in the name)."""
        parts, qualified = name.lower().split("."), False
        for suffix in SUFFIXES:
            if len(parts) > len(suffix) and tuple(parts[-len(suffix):]) == suffix:
                parts, qualified = parts[:-len(suffix)], True
                break
        candidates = []  # (table, namespace, service)
        if len(parts) == 2:
            candidates.append((self.services, parts[1], parts[0]))  # svc.ns
        if len(parts) == 3:
            candidates.append((self.headless, parts[2], parts[1]))  # host.svc.ns
        if not qualified and len(parts) == 1:
            candidates.append((self.services, namespace, parts[0]))  # svc
        if not qualified and len(parts) == 2:
            candidates.append((self.headless, namespace, parts[1]))  # host.svc
        return any(svc in table.get(ns, ()) for table, ns, svc in candidates)

    def onto_loopback(self, value: str, namespace: str) -> str:
        """An env value that is a name the DNS answers for, or a URL or host:port with one as
        its host, with that host as 127.0.0.1; any other value as it is."""
        match = _URL.fullmatch(value)
        if not match or not self.resolves(match["host"], namespace):
            return value
        return (match["head"] or "") + LOOPBACK + match["tail"]

    def host_patterns(self) -> list[str]:
        """Shell patterns of every name answered from some namespace, for `nslookup`."""
        patterns = set()
        for ns, services in self.services.items():
            for svc in services:
                patterns |= {svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"}
        for ns, services in self.headless.items():
            for svc in services:
                patterns |= {f"*.{svc}", f"*.{svc}.{ns}", f"*.{svc}.{ns}.svc",
                             f"*.{svc}.{ns}.svc.cluster.local"}
        return sorted(patterns)
