"""file:///absolute/path URIs, for local mode: the same contract as S3 on a local folder."""

import shutil
from pathlib import Path

from kubetune.storage.base import Store, atomic, write_atomic
from kubetune.storage.errors import StorageError, translated
from kubetune.storage.uri import local_path


class LocalStore(Store):
    """file:///absolute/path URIs."""

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        root = local_path(uri)
        with translated(uri):
            files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
            return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in files)

    def stat(self, uri: str) -> int | None:
        path = local_path(uri)
        with translated(uri):
            return path.stat().st_size if path.is_file() else None

    def download_file(self, uri: str, dest: Path) -> Path:
        with translated(uri), atomic(Path(dest)) as tmp:
            shutil.copyfile(local_path(uri), tmp)
        return Path(dest)

    def upload_file(self, path: Path, uri: str) -> str:
        with translated(uri), atomic(local_path(uri)) as tmp:
            shutil.copyfile(path, tmp)
        return uri

    def read_bytes(self, uri: str) -> bytes:
        with translated(uri):
            return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with translated(uri):
            write_atomic(local_path(uri), data)

    def delete_prefix(self, uri: str) -> int:
        path = local_path(uri)
        if path == path.parent:
            raise StorageError(uri, "refusing to delete the root folder")
        count = len(self.list_files(uri))
        with translated(uri):
            if path.is_dir():
                shutil.rmtree(path)
        return count
