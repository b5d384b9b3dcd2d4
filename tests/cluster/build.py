"""Builds the test control plane's binaries from the Go modules pinned in tests/cluster/ into a
cache outside the repo, and finds the files the tests need (CRDs, stages) in those modules' trees.

    python -m tests.cluster.build            # build what is missing, one line per binary
    python -m tests.cluster.build --paths    # print the binaries and upstream files used
    python -m tests.cluster.build --sync     # after editing versions.env: rewrite go/*/go.mod
Standard library only: it runs before any virtual environment exists."""

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
GO_MODULES = HERE / "go"  # one wrapper module per upstream dependency graph


@dataclass(frozen=True)
class Group:
    """Binaries built by one `go build` in the wrapper module go/<name>/: one shared compile."""

    version_key: str  # in versions.env
    module: str  # the upstream module that go.mod requires at that version
    binaries: dict[str, str]  # our name -> Go package
    also: dict[str, str] = field(default_factory=dict)  # more pins of go.mod: key -> module

    def pins(self) -> dict[str, str]:
        """versions.env key -> module, for every module this group's go.mod requires by name."""
        return {self.version_key: self.module, **self.also}


def _k8s_version_flags(version: str) -> list[str]:
    # What Kubernetes' own build stamps; unstamped binaries report v0.0.0 to /version, and Kueue
    # and kubectl read the server version.
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    return flags


GROUPS = {
    "kubernetes": Group("KUBERNETES", "k8s.io/kubernetes", {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    }),
    "etcd": Group("ETCD", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    "kwok": Group("KWOK", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    "training-operator": Group("TRAINING_OPERATOR", "github.com/kubeflow/training-operator", {
        "training-operator": "github.com/kubeflow/training-operator/cmd/training-operator.v1",
    }),
    "kueue": Group("KUEUE", "sigs.k8s.io/kueue", {"kueue": "sigs.k8s.io/kueue/cmd/kueue"}),
    # Kubeflow Trainer v2 and the JobSet controller its TrainJobs become: one module graph
    # (the Trainer requires this JobSet), so one compile.
    "trainer": Group("TRAINER", "github.com/kubeflow/trainer/v2", {
        "trainer-controller-manager":
            "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager",
        "jobset": "sigs.k8s.io/jobset",
    }, also={"JOBSET": "sigs.k8s.io/jobset"}),
}
# Modules whose files the tests read but that build no binary: versions.env key -> module.
# Their pins do not key the binary cache, so a new one rebuilds nothing.
SOURCES = {"KSERVE": "github.com/kserve/kserve"}
# setup-envtest's folder (KUBEBUILDER_ASSETS) provides these; then they are not built.
ENVTEST_BINARIES = ("kube-apiserver", "etcd")


class BuildError(RuntimeError):
    """A one-line reason the binaries could not be built."""


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in VERSIONS_FILE.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def go_command() -> str | None:
    """The Go toolchain: on PATH, or where the official tarball installs it."""
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None


def envtest_assets() -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    return Path(assets) if assets else None


def cache_dir() -> Path:
    """~/.cache/kubetune/cluster/<hash of the pins>: a new pin never reuses an old binary."""
    lines = VERSIONS_FILE.read_text().splitlines(keepends=True)
    built = "".join(line for line in lines if line.split("=", 1)[0].strip() not in SOURCES)
    digest = hashlib.sha256(built.encode())
    for path in sorted(GO_MODULES.glob("*/go.*")):
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0" + path.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "kubetune" / "cluster" / digest.hexdigest()[:16]


def binary_paths() -> dict[str, Path]:
    """Where each binary is (or will be once built)."""
    bin_dir = cache_dir() / "bin"
    paths = {name: bin_dir / name for group in GROUPS.values() for name in group.binaries}
    assets = envtest_assets()
    if assets:
        paths.update({name: assets / name for name in ENVTEST_BINARIES})
    return paths


def ensure_built(names=None, log=print) -> dict[str, Path]:
    """Builds the missing binaries among `names` (all by default); returns every binary's path."""
    paths = binary_paths()
    wanted = set(names or paths)
    for name in wanted & set(ENVTEST_BINARIES):
        if envtest_assets() and not paths[name].exists():
            raise BuildError(f"KUBEBUILDER_ASSETS has no {name}: {paths[name]}")
    total = 0.0
    for group_name, group in GROUPS.items():
        missing = [n for n in group.binaries if n in wanted and not paths[n].exists()]
        if not missing:
            continue
        seconds = _build_group(group_name, missing, cache_dir() / "bin")
        total += seconds
        for name in missing:
            log(f"{name:<24} built in {seconds:5.0f} s  (one go build of {group_name})")
    if total:
        log(f"{'total':<24} built in {total:5.0f} s  into {cache_dir() / 'bin'}")
    return paths


def _build_group(group_name: str, names: list[str], bin_dir: Path) -> float:
    go = go_command()
    if not go:
        raise BuildError("no Go toolchain (`go` on PATH or /usr/local/go/bin/go) to build "
                         + ", ".join(names))
    group = GROUPS[group_name]
    packages = {name: group.binaries[name] for name in names}
    check_pins(group_name)
    version = versions()[group.version_key]
    ldflags = ["-s", "-w"] + (_k8s_version_flags(version) if group_name == "kubernetes" else [])
    tmp = bin_dir.parent / f"tmp-{group_name}-{os.getpid()}"
    log_path = bin_dir.parent / "logs" / f"build-{group_name}.log"
    for folder in (tmp, bin_dir, log_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    # One invocation for the group: its packages share one compile of their common dependencies.
    command = [go, "build", "-trimpath", "-buildvcs=false", "-ldflags=" + " ".join(ldflags),
               "-o", f"{tmp}/", *packages.values()]
    start = time.monotonic()
    with log_path.open("w") as log_file:  # static binaries, as upstream releases them: no C
        result = subprocess.run(command, cwd=GO_MODULES / group_name, stdout=log_file,
                                stderr=subprocess.STDOUT, env={**os.environ, "CGO_ENABLED": "0"})
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        raise BuildError(f"go build of {group_name} failed (exit {result.returncode}): "
                         f"{lines[-1] if lines else 'no output'}; log: {log_path}")
    for name, package in packages.items():
        os.replace(tmp / _go_exec_name(package), bin_dir / name)  # atomic: never half a binary
    tmp.rmdir()
    return time.monotonic() - start


def _go_exec_name(package: str) -> str:
    """The file name `go build -o dir/` gives a package: a major-version suffix (/v3) is skipped."""
    parts = package.split("/")
    return parts[-2] if re.fullmatch(r"v[2-9][0-9]*", parts[-1]) else parts[-1]


def check_pins(group_name: str) -> None:
    """versions.env is the one place versions are edited; go.mod must follow it (--sync)."""
    gomod = (GO_MODULES / group_name / "go.mod").read_text()
    for key, module in GROUPS[group_name].pins().items():
        wanted = versions()[key]
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", gomod, re.M)
        pinned = found.group(1) if found else "nothing"
        if pinned != wanted:
            raise BuildError(f"versions.env has {key}={wanted} but go/{group_name}/go.mod "
                             f"requires {module} {pinned}; run `python -m tests.cluster.build "
                             "--sync`")


def sync() -> None:
    """Rewrites each wrapper go.mod to the versions in versions.env, then `go mod tidy`."""
    go = go_command()
    if not go:
        raise BuildError("--sync needs a Go toolchain")
    pins = versions()
    for group_name, group in GROUPS.items():
        path = GO_MODULES / group_name / "go.mod"
        text = path.read_text()
        for key, module in group.pins().items():
            text = re.sub(rf"^(\s*(?:require\s+)?{re.escape(module)}\s+)\S+",
                          lambda m, v=pins[key]: m.group(1) + v, text, flags=re.M)
        if group_name == "kubernetes":  # staging modules: v1.35.4 is published as v0.35.4
            version = pins[group.version_key]
            staging = "v0" + version[version.index("."):]
            text = re.sub(r"(=> k8s\.io/\S+ )v0\.\S+", rf"\g<1>{staging}", text)
        path.write_text(text)
        subprocess.run([go, "mod", "tidy"], cwd=path.parent, check=True)
        print(f"go/{group_name}: " + ", ".join(f"{m} {pins[k]}" for k, m in group.pins().items()))


@functools.cache
def module_dir(group_name: str, version_key: str | None = None) -> Path:
    """The source tree of the group's module, or of its pin `version_key` (JOBSET in the
    trainer group), in the Go module cache (downloaded if needed)."""
    group = GROUPS[group_name]
    key = version_key or group.version_key
    return _download(f"{group.pins()[key]}@{versions()[key]}", GO_MODULES / group_name)


@functools.cache
def source_dir(version_key: str) -> Path:
    """The source tree of a module of SOURCES (KSERVE ...) at its pin, in the Go module cache."""
    return _download(f"{SOURCES[version_key]}@{versions()[version_key]}", HERE)


def _download(spec: str, cwd: Path) -> Path:
    go = go_command()
    if not go:
        raise BuildError(f"no Go toolchain to download {spec}")
    result = subprocess.run([go, "mod", "download", "-json", spec], cwd=cwd,
                            capture_output=True, text=True)
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise BuildError(f"go mod download {spec}: {info.get('Error') or result.stderr.strip()}")
    return Path(info["Dir"])


def crd_paths() -> dict[str, list[Path]]:
    """Upstream CRDs the tests apply, from the module trees (never copied into the repo)."""
    return {
        "training-operator": [module_dir("training-operator")
                              / "manifests/base/crds/kubeflow.org_pytorchjobs.yaml"],
        # Each kustomization lists the CRDs it installs.
        "kueue": _kustomized(module_dir("kueue") / "config/components/crd"),
        "trainer": _kustomized(module_dir("trainer") / "manifests/base/crds"),
        "jobset": _kustomized(module_dir("trainer", "JOBSET") / "config/components/crd"),
    }


def _kustomized(folder: Path) -> list[Path]:
    """The files under `resources:` of the folder's kustomization.yaml (one per line)."""
    lines = (folder / "kustomization.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("resources:")) + 1
    files = []
    for line in lines[start:]:
        if not line.strip().startswith("- "):
            break
        files.append(folder / line.strip()[2:])
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", action="store_true", help="print binaries and upstream files")
    parser.add_argument("--sync", action="store_true", help="rewrite go/*/go.mod from versions.env")
    args = parser.parse_args()
    try:
        if args.sync:
            sync()
        paths = ensure_built()
        where = f"{cache_dir() / 'bin'}" + (
            f" ({', '.join(ENVTEST_BINARIES)} from KUBEBUILDER_ASSETS)" if envtest_assets() else "")
        print(f"{len(paths)} binaries ready in {where}")
        if args.paths:
            for name, path in paths.items():
                print(f"{name:<24} {path}")
            for owner, files in crd_paths().items():
                for path in files:
                    print(f"{owner + ' CRD':<24} {path}")
    except BuildError as error:
        print(f"tests.cluster.build: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
