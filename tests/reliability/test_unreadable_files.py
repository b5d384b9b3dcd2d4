"""Hostile or broken YAML (alias bombs, deep nesting, duplicate keys, oversized files) is refused
by every command that reads a user's file, with one line naming the file and the limit, in
bounded memory: each command runs in its own process under a 1.5 GiB address-space limit,
which the unbounded reader (4 GB and a MemoryError for a 558-byte file) would break."""

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

CORPUS = sorted((Path(__file__).parent / "corpus" / "unreadable").glob("*.yaml"))
ADDRESS_SPACE = 1536 * 1024 * 1024
KUBETUNE = [sys.executable, "-m", "kubetune.cli.main"]


def expected(path: Path) -> str:
    return re.match(r"# expect: (.+)\n", path.read_text())[1]


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def kubetune(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [*KUBETUNE, *args], capture_output=True, text=True, timeout=60, preexec_fn=limited
    )
    return done, time.monotonic() - start


def one_line(done: subprocess.CompletedProcess) -> str:
    out = (done.stdout + done.stderr).strip()
    assert "Traceback" not in out and "MemoryError" not in out, out
    assert len(out.splitlines()) == 1, out
    return out


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_validate_and_render_refuse_with_one_line(path: Path, figures):
    for command in (["validate"], ["render"]):
        done, seconds = kubetune(*command, str(path))
        line = one_line(done)
        assert done.returncode == 2 if command == ["render"] else 1, (command, line)
        assert str(path) in line and expected(path) in line, (command, line)
        figures.record(f"{command[0]} {path.stem} seconds", round(seconds, 2))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_operator_config_refuses_with_one_line(path: Path):
    done, _ = kubetune("operator", "--standalone", "--config", str(path))
    line = one_line(done)
    assert done.returncode == 2 and str(path) in line and expected(path) in line, line


def test_oversized_manifest_is_refused_before_it_is_read(tmp_path: Path):
    big = tmp_path / "huge.yaml"
    with big.open("w") as out:
        out.write("apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x}\n")
        out.write(f"# {'x' * 1022}\n" * (17 * 1024))  # 17 MiB of comments
    done, _ = kubetune("validate", str(big))
    line = one_line(done)
    assert done.returncode == 1 and "17.0 MiB is over the 16.0 MiB limit" in line, line
    config = tmp_path / "operator.yaml"
    config.write_text("imagePullPolicy: IfNotPresent\n" + "# padding\n" * 120_000)
    done, _ = kubetune("operator", "--standalone", "--config", str(config))
    line = one_line(done)
    assert done.returncode == 2 and "over the 1.0 MiB limit" in line, line


def test_a_five_megabyte_manifest_validates(tmp_path: Path, figures):
    job = (Path(__file__).parents[2] / "examples/quickstart/domain-adaptation.yaml").read_text()
    copies = 5 * 1024 * 1024 // len(job) + 1
    big = tmp_path / "many.yaml"
    big.write_text("\n---\n".join(job.replace("incident-notes", f"j{i}") for i in range(copies)))
    done, seconds = kubetune("validate", str(big))
    assert done.returncode == 0, done.stdout[-500:] + done.stderr
    assert done.stdout.count(": valid") == copies
    figures.record("validate 5 MiB manifest seconds", round(seconds, 1))
