"""The store interface every backend implements, and the contract tests hold them to.

Keys are relative to the store's root (bucket prefix or directory) and use '/' separators.
Writes are all-or-nothing: a reader never sees a half-written object under its final key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime
    checksum_verified: bool = False  # the store confirmed our SHA-256 of the content


class Upload(Protocol):
    """An object being written: nothing is visible under its key until `commit`, and `abort`
    leaves nothing behind. Bytes are passed on as they come (the file store writes them once, to
    their final folder; S3 sends parts while later ones are still being produced), so memory stays
    bounded whatever the size."""

    def write(self, data: bytes) -> None: ...

    def commit(self, *, sha256: str) -> ObjectInfo:
        """Make the object visible, then verify it is there in full: size always, and the content's
        SHA-256 (hex `sha256`) wherever the store can check it. VerificationFailed if not."""
        ...

    def abort(self) -> None:
        """Discard everything written (also after a failure); never raises."""
        ...


class Store(Protocol):
    @property
    def url(self) -> str:
        """Where this store points, safe to log."""
        ...

    def open_upload(self, key: str) -> Upload: ...

    def local_path(self, key: str) -> Path | None:
        """Where the object already is on this machine (a local store), to read it in place
        instead of downloading a copy; None for a remote store."""
        ...

    def put_file(self, key: str, source: Path, *, sha256: str) -> ObjectInfo:
        """Upload a file, then verify it is there in full: size always, and the content's SHA-256
        (hex `sha256`) wherever the store can check it. VerificationFailed if not."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size (and checksum where the store reports it), or None if absent."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, destination: Path) -> None: ...

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, keys: list[str]) -> None: ...

    def abort_stale_uploads(self, prefix: str, older_than: datetime) -> list[str]:
        """Abort unfinished multipart uploads (S3); the keys they were for."""
        ...


CHUNK = 1 << 20


def upload_file(
    store: Store, key: str, source: Path, *, sha256: str, check: Callable[[], None]
) -> ObjectInfo:
    """put_file for any store: the file's bytes through one Upload, `check` between chunks."""
    upload = store.open_upload(key)
    try:
        with source.open("rb") as src:
            while chunk := src.read(CHUNK):
                upload.write(chunk)
                check()
        return upload.commit(sha256=sha256)
    except BaseException:
        upload.abort()
        raise
