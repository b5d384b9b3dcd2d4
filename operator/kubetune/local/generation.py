"""The tuned model of a finished job (and its base) answering prompts: what `kubetune generate`
runs. Artifacts are read where they are (file://) or downloaded once into a cache (s3://);
the base model is the job's model source unless the user names another folder.

torch, transformers and peft (the trainer extra) are imported when a model is loaded, so the
rest of the CLI works without them.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api.v1alpha1 import PromptFormat, TrainerConfig
from kubetune.api.v1alpha1.outputs import CONFIG, MERGED, PROMPT, InvalidOutput
from kubetune.local import prompts, summary
from kubetune.local.files import LocalError
from kubetune.local.prompts import Prompt
from kubetune.storage import StorageError, join_uri, open_store
from kubetune.storage.uri import local_path

log = logging.getLogger(__name__)

CACHE = Path("~/.cache/kubetune/generate").expanduser()


@dataclass
class Job:
    """A finished job's artifacts; its folders made local when asked for."""

    uri: str
    config: TrainerConfig
    prompt: PromptFormat
    has_merged: bool  # False: the job did not export merged weights (merge_weights: false)
    store: Any
    cache: Path  # this job's folder in the download cache

    def folder(self, name: str) -> Path:
        """adapter/ or merged/ as a local folder: a file:// one as it is, an s3:// one
        downloaded once into the cache."""
        uri = join_uri(self.uri, name, "")
        if uri.startswith("file://"):
            return local_path(uri)
        try:
            self.store.download_dir(uri, self.cache / name)
        except StorageError as err:
            raise LocalError(str(err)) from None
        return self.cache / name


def open_job(uri: str, cache: Path = CACHE) -> Job:
    """The finished job at uri (NotFinished when it is not)."""
    outputs = summary.read_outputs(uri)
    listed = {f.path.split("/")[0] for f in outputs.manifest.files}
    store = open_store(uri)
    try:
        config = TrainerConfig.model_validate_json(store.read_bytes(join_uri(uri, CONFIG)))
    except (StorageError, ValueError) as err:
        raise LocalError(f"{join_uri(uri, CONFIG)}: cannot read the job's config ({err})") from None
    if PROMPT in listed:
        try:
            fmt = PromptFormat.read(store.read_bytes(join_uri(uri, PROMPT)), PROMPT)
        except (StorageError, InvalidOutput) as err:
            raise LocalError(str(err)) from None
    else:  # written by a trainer before prompt.json existed
        log.warning("%s: no %s; prompts are given to the model as plain text", uri, PROMPT)
        fmt = PromptFormat(data_format="unknown")
    key = hashlib.sha256(f"{uri}{outputs.manifest.job.uid}".encode()).hexdigest()[:16]
    return Job(uri, config, fmt, MERGED in listed, store, cache / key)


def base_folder(job: Job, given: str | None, cache: Path = CACHE) -> Path:
    """The base model: the folder or URI the user gave, else the job's model source."""
    uri = given or job.config.model.source
    if "://" not in uri:
        uri = Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("file://"):
        path = local_path(uri)
        if not (path / "config.json").is_file():
            model_id = job.config.model.model_id
            said = "--base-model" if given else f"the job's model source ({model_id})"
            raise LocalError(
                f"{said} {uri}: no Hugging Face model folder there; pass --base-model DIR "
                "(the hub model's folder) to load the base model from elsewhere"
            )
        return path
    folder = cache / "base" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        store = open_store(uri)
        store.download_dir(uri, folder)
    except StorageError as err:
        raise LocalError(f"base model: {err}; pass --base-model DIR to use a local copy") from None
    return folder


def quiet_transformers() -> None:
    """No weight-loading progress bars or deprecation notes between the answers."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


class Generator:
    """One model in memory: the base with the job's adapter (switched off for base answers),
    or the merged weights alone."""

    def __init__(self, job: Job, model_dir: Path, adapter: Path | None, device: str | None):
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        quiet_transformers()
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        config = AutoConfig.from_pretrained(model_dir)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        model = auto.from_pretrained(model_dir, dtype=dtype)
        # The tokenizer the job saved: its pad token and chat template are the training ones.
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or model_dir)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        self.has_adapter = adapter is not None
        self.fmt = job.prompt

    def answers(self, batch: list[Prompt], options: dict, base: bool = False) -> list[str]:
        """Each prompt's answer: only the new tokens, up to the end of turn or EOS."""
        ids = [prompts.encode(p, self.fmt, self.tokenizer) for p in batch]
        inputs = self.left_padded(ids)
        stop = prompts.stop_ids(self.fmt, self.tokenizer)
        settings = {"eos_token_id": stop, "pad_token_id": self.pad_id()} | options
        with self.torch.inference_mode(), self.adapter_off(base):
            out = self.model.generate(**inputs, **settings)
        start = 0 if self.seq2seq else inputs["input_ids"].shape[1]
        return [self.tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in out]

    def left_padded(self, ids: list[list[int]]) -> dict:
        """One batch, padded on the left so every row's continuation starts at the end."""
        width = max(len(row) for row in ids)
        pad = self.pad_id()
        rows = [[pad] * (width - len(row)) + row for row in ids]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
        tensor = self.torch.tensor
        return {
            "input_ids": tensor(rows, device=self.device),
            "attention_mask": tensor(mask, device=self.device),
        }

    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def adapter_off(self, base: bool):
        from contextlib import nullcontext

        return self.model.disable_adapter() if base and self.has_adapter else nullcontext()
