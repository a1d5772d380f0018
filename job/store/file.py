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
from job.store.base import ObjectInfo

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

    def _write_atomically(self, key: str, content: bytes | Path) -> None:
        """Write to a temporary name, fsync, rename into place, fsync the directory."""
        target = self._path(key)
        try:
            _make_durable_dirs(target.parent)
            fd, name = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as out:
                    if isinstance(content, bytes):
                        out.write(content)
                    else:
                        self._copy(content, out, f"writing {target}")
                    out.flush()
                    os.fsync(out.fileno())
                tmp.replace(target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_directory(target.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def put_file(self, key: str, source: Path, *, sha256: str) -> ObjectInfo:
        self._write_atomically(key, source)
        info = self.head(key)
        expected = source.stat().st_size
        if info is None or info.size != expected:
            raise VerificationFailed(
                f"{self._path(key)} has {info.size if info else 'no'} bytes after writing, "
                f"expected {expected}"
            )
        return info

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomically(key, data)

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
