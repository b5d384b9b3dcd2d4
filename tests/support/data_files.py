"""Data channel files for trainer tests: a folder's files written as the download leaves them."""

import json
from pathlib import Path


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_jsonl(folder: Path, name: str, records: list) -> Path:
    return write(folder, name, "".join(json.dumps(r) + "\n" for r in records))
