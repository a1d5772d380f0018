"""The store interface every backend implements, and the contract tests hold them to.

Keys are relative to the store's root (bucket prefix or directory) and use '/' separators.
Writes are all-or-nothing: a reader never sees a half-written object under its final key.
"""

from __future__ import annotations

from collections.abc import Iterator
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


class Store(Protocol):
    @property
    def url(self) -> str:
        """Where this store points, safe to log."""
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
