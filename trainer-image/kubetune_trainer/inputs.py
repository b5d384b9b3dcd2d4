"""The job's inputs on local disk: the model folder and the data channels, downloaded to
scratch, and the data turned into samples by the job's data format."""

from pathlib import Path

from kubetune.storage import open_store
from kubetune_trainer.formats import Channels, DataError, Splits
from kubetune_trainer.outages import Patient
from kubetune_trainer.presigned import PresignedStore


def download_model(config, runtime, scratch: Path) -> Path:
    """The model's files, from the operator's presigned URLs when it gave them, else with
    the model channel's credentials."""
    store = PresignedStore(runtime.model_urls) if runtime.model_urls else None
    return download(config.model.source, scratch / "model", runtime.credentials["model"], store)


def download_data(config, runtime, scratch: Path) -> Channels:
    credentials = runtime.credentials["data"]
    train = download(config.data.train, scratch / "data" / "train", credentials)
    validation = download(config.data.validation, scratch / "data" / "validation", credentials)
    return Channels(train=train, validation=validation)


def download(uri: str | None, dest: Path, credentials: dict[str, str], store=None) -> Path | None:
    """uri's files into dest, with `store` (the model's presigned URLs) or the channel's own."""
    if uri is None:
        return None
    Patient(store or open_store(uri, credentials)).download_dir(uri, dest)
    return dest


def load_data(chosen, channels: Channels, config, hp, tokenizer) -> Splits:
    """The samples of the job's data format; a data problem names the user's URI, not the
    scratch copy."""
    try:
        return chosen.part.load(channels, hp, tokenizer, chosen.options)
    except DataError as err:
        copies = {channels.train: config.data.train, channels.validation: config.data.validation}
        raise DataError(where_stored(str(err), copies)) from None


def where_stored(message: str, copies: dict[Path | None, str | None]) -> str:
    """Name the user's URIs in a message about the local copies (scratch paths mean nothing
    to them): /scratch/UID/data/train/a.csv -> s3://bucket/train/a.csv."""
    for local, uri in copies.items():
        if local is not None and uri is not None:
            message = message.replace(str(local), uri.rstrip("/"))
    return message
