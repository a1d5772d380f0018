"""What a store holds: committed snapshots, leftovers, and the operations on them (list, fetch and
verify, prune). Only a snapshot with a manifest exists; anything else is a leftover."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard

from job import database
from job.deadline import Deadline
from job.errors import DatabaseProblem, UsageError, VerificationFailed
from job.log import get_logger
from job.manifest import ROOT, Manifest, data_key, id_of, manifest_key
from job.store import ObjectInfo, Store

CHUNK = 1 << 20
LEFTOVER_AGE = timedelta(hours=1)


@dataclass
class Entry:
    id: str
    objects: dict[str, ObjectInfo] = field(default_factory=dict)  # file name -> info

    @property
    def committed(self) -> bool:
        return "manifest.json" in self.objects

    @property
    def newest_change(self) -> datetime:
        return max(o.modified for o in self.objects.values())


def scan(store: Store) -> list[Entry]:
    """Every snapshot folder in the store, newest id first."""
    entries: dict[str, Entry] = {}
    for obj in store.list_objects(ROOT):
        snapshot_id = id_of(obj.key)
        if snapshot_id is not None:
            entries.setdefault(snapshot_id, Entry(snapshot_id)).objects[obj.key.rsplit("/", 1)[1]] = obj
    return sorted(entries.values(), key=lambda e: e.id, reverse=True)


def read_manifest(store: Store, snapshot_id: str) -> Manifest:
    key = manifest_key(snapshot_id)
    return Manifest.from_json(store.get_bytes(key), where=f"{store.url}/{key}")


def committed(
    store: Store, *, skip_damaged: bool = False, entries: list[Entry] | None = None
) -> Iterator[Manifest]:
    """Committed snapshots, newest first (from `entries` when the caller already scanned); with
    `skip_damaged`, unreadable manifests are logged (`snapshot.damaged`) and passed over instead
    of failing (exit 8)."""
    for entry in scan(store) if entries is None else entries:
        if not entry.committed:
            continue
        try:
            yield read_manifest(store, entry.id)
        except VerificationFailed as exc:
            if not skip_damaged:
                raise
            get_logger().error("snapshot.damaged", id=entry.id, error=exc.message)


def latest(store: Store) -> Manifest | None:
    """The newest committed snapshot (VerificationFailed if its manifest is unreadable)."""
    return next(committed(store), None)


def latest_readable(store: Store) -> tuple[Manifest | None, str | None]:
    """The newest snapshot whose manifest reads, and the newest id of any snapshot folder. A
    damaged manifest must not stop the next backup or every later deploy: it is logged loudly
    and passed over (`snapshots verify` still fails on it)."""
    entries = scan(store)
    newest = next(committed(store, skip_damaged=True, entries=entries), None)
    return newest, entries[0].id if entries else None


def resolve(store: Store, which: str) -> Manifest:
    """A snapshot by id, or 'latest'."""
    if which == "latest":
        found = latest(store)
        if found is None:
            raise UsageError(
                f"no committed snapshot in {store.url}: check --store / SNAPSHOT_STORE (bucket and prefix)"
            )
        return found
    if store.head(manifest_key(which)) is None:
        raise UsageError(f"snapshot {which!r} not found in {store.url} (see 'snapshots list')")
    return read_manifest(store, which)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_present(store: Store, manifest: Manifest) -> None:
    """The data object exists with the manifest's size, or VerificationFailed (exit 8)."""
    info = store.head(data_key(manifest.id))
    if info is None:
        raise VerificationFailed(f"snapshot {manifest.id}: data object {data_key(manifest.id)} is missing")
    if info.size != manifest.compressed_size:
        raise VerificationFailed(
            f"snapshot {manifest.id}: data object has {info.size} bytes, manifest says "
            f"{manifest.compressed_size}"
        )


def fetch(store: Store, manifest: Manifest, destination: Path, *, deadline: Deadline) -> None:
    """Download, check both SHA-256 values, decompress to `destination`, run integrity_check:
    a restore drill. VerificationFailed (exit 8) on any mismatch; nothing live is touched."""
    check_present(store, manifest)
    packed = destination.with_name(destination.name + ".zst")
    try:
        store.download(data_key(manifest.id), packed)
        deadline.check("verifying the snapshot")
        actual = _sha256_of(packed)
        if actual != manifest.compressed_sha256:
            raise VerificationFailed(
                f"snapshot {manifest.id}: compressed SHA-256 is {actual}, manifest says "
                f"{manifest.compressed_sha256}"
            )
        raw = hashlib.sha256()
        with packed.open("rb") as src, destination.open("wb") as out:
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(src)
                while chunk := reader.read(CHUNK):
                    raw.update(chunk)
                    out.write(chunk)
            except zstandard.ZstdError as exc:
                raise VerificationFailed(f"snapshot {manifest.id}: cannot decompress: {exc}") from exc
    finally:
        packed.unlink(missing_ok=True)
    if raw.hexdigest() != manifest.raw_sha256:
        raise VerificationFailed(
            f"snapshot {manifest.id}: database SHA-256 is {raw.hexdigest()}, manifest says "
            f"{manifest.raw_sha256}"
        )
    try:
        with database.opened(destination) as conn:
            problems = database.quick_check(conn, full=True)
    except (DatabaseProblem, sqlite3.DatabaseError) as exc:
        problems = [str(exc)]
    if problems:
        raise VerificationFailed(f"snapshot {manifest.id}: integrity_check failed: {'; '.join(problems[:3])}")


def verify(store: Store, which: str, *, download: bool, deadline: Deadline) -> dict[str, Any]:
    """`snapshots verify`: present with the right size; with `download`, a full restore drill in a
    temporary directory that touches nothing live."""
    manifest = resolve(store, which)
    check_present(store, manifest)
    if download:
        with tempfile.TemporaryDirectory(prefix="relayer-job-verify-") as scratch:
            fetch(store, manifest, Path(scratch) / f"{manifest.id}.db", deadline=deadline)
    get_logger().info("snapshot.verified", id=manifest.id, downloaded=download)
    return {"id": manifest.id, "downloaded": download, "integrity_check": "ok" if download else None}


def summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "created_at": manifest.created_at,
        "size": manifest.compressed_size,
        "raw_size": manifest.raw_size,
        "reason": manifest.reason,
        "schema_version": manifest.schema_version,
        "commit": manifest.deploy.get("RENDER_GIT_COMMIT"),
    }


def prune(
    store: Store,
    *,
    keep_last: int,
    keep_days: float | None,
    apply: bool,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Delete committed snapshots beyond the retention, and leftovers older than an hour. The
    newest snapshot is never deleted. A snapshot is un-committed (manifest deleted) before its data."""
    if keep_last < 1:
        raise UsageError("--keep-last: must be at least 1 (the newest snapshot is always kept)")
    log = get_logger()
    now = now or datetime.now(UTC)
    entries = scan(store)
    keep: list[Entry] = []
    drop: list[Entry] = []
    leftovers: list[Entry] = []
    committed_seen = 0
    for entry in entries:
        if not entry.committed:
            if now - entry.newest_change > LEFTOVER_AGE:
                leftovers.append(entry)
            continue
        committed_seen += 1
        recent = False
        if keep_days is not None:
            created = datetime.strptime(read_manifest(store, entry.id).created_at, "%Y-%m-%dT%H:%M:%SZ")
            recent = now - created.replace(tzinfo=UTC) <= timedelta(days=keep_days)
        (keep if committed_seen <= keep_last or recent else drop).append(entry)
    plan = {
        "keep": [e.id for e in keep],
        "delete": [e.id for e in drop],
        "leftovers": [e.id for e in leftovers],
        "applied": apply,
    }
    if not apply:
        log.info("prune.planned", **plan, hint="pass --apply to delete")
        return plan
    for entry in drop:
        store.delete([manifest_key(entry.id)])
        store.delete([f"{ROOT}{entry.id}/{name}" for name in entry.objects if name != "manifest.json"])
        log.info("snapshot.deleted", id=entry.id)
    for entry in leftovers:
        store.delete([f"{ROOT}{entry.id}/{name}" for name in entry.objects])
        log.info("snapshot.leftover_deleted", id=entry.id)
    plan["aborted_uploads"] = store.abort_stale_uploads(ROOT, now - LEFTOVER_AGE)
    return plan
