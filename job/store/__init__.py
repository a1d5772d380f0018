"""Snapshot stores: one small interface (`Store`), one backend per URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from job.config import S3Options
from job.deadline import Deadline
from job.errors import UsageError
from job.store.base import ObjectInfo, Store, Upload

__all__ = ["ObjectInfo", "Store", "Upload", "open_store"]


def open_store(url: str, s3: S3Options, deadline: Deadline) -> Store:
    """The store for `url`: s3://BUCKET/PREFIX, file:///ABSOLUTE/PATH or file:RELATIVE/PATH."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from job.store.file import FileStore

        if parts.netloc not in ("", "localhost"):
            raise UsageError(
                f"--store / SNAPSHOT_STORE: {url!r} names a host; use file:///ABSOLUTE/PATH "
                "or file:RELATIVE/PATH"
            )
        if not parts.path:
            raise UsageError("--store / SNAPSHOT_STORE: file: URL without a path")
        return FileStore(parts.path, deadline)
    if parts.scheme == "s3":
        from job.store.s3 import S3Store

        if "@" in parts.netloc:
            raise UsageError(
                "--store / SNAPSHOT_STORE: credentials do not belong in the store URL; use "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role)"
            )
        if not parts.netloc:
            raise UsageError(f"--store / SNAPSHOT_STORE: {url!r} has no bucket (s3://BUCKET/PREFIX)")
        return S3Store(parts.netloc, parts.path.strip("/"), s3, deadline)
    raise UsageError(
        f"--store / SNAPSHOT_STORE: unsupported store URL {url!r}; use s3://BUCKET/PREFIX or "
        "file:///ABSOLUTE/PATH"
    )
