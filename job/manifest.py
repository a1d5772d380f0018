"""The snapshot manifest: the commit point of a snapshot, and the layout of snapshots in a store.

A snapshot exists only once its manifest exists: the data object is uploaded and verified first,
the manifest last. Layout (part of the interface):
    PREFIX/snapshots/<id>/relayer.db.zst
    PREFIX/snapshots/<id>/manifest.json
where <id> is the UTC time and a short content hash, e.g. 20261125T084512Z-3fa71d32, so that keys
are immutable and sort by time.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from job.errors import VerificationFailed

FORMAT = "relayer-job.snapshot/1"
ROOT = "snapshots/"
DATA_NAME = "relayer.db.zst"
MANIFEST_NAME = "manifest.json"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def data_key(snapshot_id: str) -> str:
    return f"{ROOT}{snapshot_id}/{DATA_NAME}"


def manifest_key(snapshot_id: str) -> str:
    return f"{ROOT}{snapshot_id}/{MANIFEST_NAME}"


def id_of(key: str) -> str | None:
    """The snapshot id a store key belongs to, or None for a key outside the layout."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == ROOT and ID_PATTERN.match(parts[1]):
        return parts[1]
    return None


@dataclass(frozen=True)
class Manifest:
    id: str
    created_at: str
    reason: str
    source_db: str
    raw_size: int
    page_size: int
    page_count: int
    journal_mode: str
    sqlite_version: str
    raw_sha256: str
    compressed_size: int
    compressed_sha256: str
    compression: dict[str, Any]
    quick_check: str
    migrations: list[dict[str, str | None]]
    schema_version: int
    job_version: str
    deploy: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        """Parse and validate, or VerificationFailed (exit 8) naming the manifest."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise VerificationFailed(f"manifest {where} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise VerificationFailed(f"manifest {where} has format {found!r}; this job reads {FORMAT!r}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise VerificationFailed(f"manifest {where} is incomplete or has unknown fields: {exc}") from exc

    def same_content(self, raw_sha256: str, migrations: list[dict[str, str | None]]) -> bool:
        return self.raw_sha256 == raw_sha256 and self.migrations == migrations
