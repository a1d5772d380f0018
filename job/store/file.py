"""A directory as a snapshot store: the default for local use and demos, same layout as S3."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from job.deadline import Deadline
from job.environment import fsync_directory
from job.errors import StoreError, VerificationFailed
from job.store.base import ObjectInfo, upload_file

CHUNK = 1 << 20


def _make_durable_dirs(directory: Path) -> None:
    """mkdir -p, with each new folder's entry fsynced in its parent, so a committed snapshot's
    folder survives a power loss."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_directory(folder.parent)


class FileUpload:
    """Bytes written straight into a temporary file in the object's final folder; commit fsyncs it
    and renames it into place (then fsyncs the folder), abort removes it."""

    def __init__(self, store: FileStore, key: str) -> None:
        self.store, self.key, self.size = store, key, 0
        self.target = store._path(key)
        try:
            _make_durable_dirs(self.target.parent)
            fd, name = tempfile.mkstemp(prefix=".partial-", dir=self.target.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        self.tmp = Path(name)
        self.out: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self.out.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        self.size += len(data)

    def commit(self, *, sha256: str) -> ObjectInfo:
        del sha256  # a local file has no transport to verify; its size is checked below
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            self.tmp.replace(self.target)
            fsync_directory(self.target.parent)
        except OSError as exc:
            self.abort()
            raise StoreError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        info = self.store.head(self.key)
        if info is None or info.size != self.size:
            raise VerificationFailed(
                f"{self.target} has {info.size if info else 'no'} bytes after writing, expected {self.size}"
            )
        return info

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)
            self.target.parent.rmdir()  # only when nothing else is in the object's folder


class FileStore:
    def __init__(self, root: str, deadline: Deadline) -> None:
        self.root = Path(root)
        self.deadline = deadline

    def _copy(self, source: Path, out: BinaryIO, doing: str) -> None:
        """Copy in chunks, so that a slow disk (or a network mount) cannot outlast the deadline."""
        with source.open("rb") as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                self.deadline.check(doing)

    @property
    def url(self) -> str:
        return f"file://{self.root.absolute()}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad store key {key!r}")
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def open_upload(self, key: str) -> FileUpload:
        return FileUpload(self, key)

    def put_file(self, key: str, source: Path, *, sha256: str) -> ObjectInfo:
        def check() -> None:
            self.deadline.check(f"writing {self._path(key)}")

        return upload_file(self, key, source, sha256=sha256, check=check)

    def put_bytes(self, key: str, data: bytes) -> None:
        upload = self.open_upload(key)
        upload.write(data)
        upload.commit(sha256="")

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror or exc}") from exc

    def download(self, key: str, destination: Path) -> None:
        try:
            with destination.open("wb") as out:
                self._copy(self._path(key), out, f"reading {self._path(key)}")
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror or exc}") from exc

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.startswith(".partial-"):
                    continue
                path = Path(dirpath) / name
                st = path.stat()
                key = path.relative_to(self.root).as_posix()
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only succeeds once the snapshot's folder is empty

    def abort_stale_uploads(self, prefix: str, older_than: datetime) -> list[str]:
        """Leftover temporary files of killed writers."""
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        removed = []
        for path in base.rglob(".partial-*") if base.is_dir() else []:
            if datetime.fromtimestamp(path.stat().st_mtime, UTC) < older_than:
                path.unlink()
                removed.append(path.relative_to(self.root).as_posix())
        return removed
