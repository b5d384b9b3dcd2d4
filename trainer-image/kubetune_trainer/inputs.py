"""The job's inputs on local disk: the model folder and the data channels, downloaded to
scratch, and the data turned into samples by the job's data format."""

from pathlib import Path

from kubetune.api.v1alpha1.trainer_config import DATA_CHANNELS
from kubetune.storage import open_store
from kubetune_trainer.formats import Channels, DataError, Splits
from kubetune_trainer.outages import Patient
from kubetune_trainer.presigned import PresignedStore
from kubetune_trainer.registry import PartError


def download_model(config, runtime, scratch: Path) -> Path:
    """The model's files, from the operator's presigned URLs when it gave them, else with
    the model channel's credentials."""
    store = PresignedStore(runtime.model_urls) if runtime.model_urls else None
    return download(config.model.source, scratch / "model", runtime.credentials["model"], store)


def download_data(config, runtime, scratch: Path) -> Channels:
    """Every data channel that is set, each to its own folder, with the data credentials."""
    credentials = runtime.credentials["data"]
    folders = {
        name: download(getattr(config.data, name), scratch / "data" / name, credentials)
        for name in DATA_CHANNELS
    }
    return Channels(**folders)


def download(uri: str | None, dest: Path, credentials: dict[str, str], store=None) -> Path | None:
    """uri's files into dest, with `store` (the model's presigned URLs) or the channel's own."""
    if uri is None:
        return None
    Patient(store or open_store(uri, credentials)).download_dir(uri, dest)
    return dest


def load_data(chosen, channels: Channels, config, hp, tokenizer) -> Splits:
    """The samples of the job's data format; a data problem names the user's URI, not the
    scratch copy. A test channel the format leaves unread is refused."""
    try:
        splits = chosen.part.load(channels, hp, tokenizer, chosen.options)
    except DataError as err:
        copies = {getattr(channels, name): getattr(config.data, name) for name in DATA_CHANNELS}
        raise DataError(where_stored(str(err), copies)) from None
    if channels.test is not None and splits.test is None:
        # Found before the model loads: a job must not train for hours, then find no test.
        raise PartError(
            f"spec.data.test: the data format {chosen.part.name!r} does not read a test "
            "channel; unset spec.data.test, or choose a format that does (the bundled ones do)"
        )
    return splits


def where_stored(message: str, copies: dict[Path | None, str | None]) -> str:
    """Name the user's URIs in a message about the local copies (scratch paths mean nothing
    to them): /scratch/UID/data/train/a.csv -> s3://bucket/train/a.csv."""
    for local, uri in copies.items():
        if local is not None and uri is not None:
            message = message.replace(str(local), uri.rstrip("/"))
    return message
