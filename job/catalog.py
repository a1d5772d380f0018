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
from typing import Any, BinaryIO

import zstandard

from job import database, retention
from job.deadline import Deadline
from job.errors import DatabaseProblem, UsageError, VerificationFailed
from job.log import get_logger
from job.manifest import (
    DATA_NAME,
    LATEST,
    MANIFEST_NAME,
    ROOT,
    Manifest,
    before_time,
    data_key,
    id_of,
    manifest_key,
    parse_choice,
    time_if_past,
)
from job.store import ObjectInfo, Store

CHUNK = 1 << 20
LEFTOVER_AGE = timedelta(hours=1)
SHUTDOWN = "shutdown"  # the reason of the final snapshot after the supervised relayer stopped
PRE_RESTORE = "pre-restore"  # the reason of the snapshot a restore takes of the database it replaces


@dataclass
class Entry:
    id: str
    objects: dict[str, ObjectInfo] = field(default_factory=dict)  # file name -> info

    @property
    def committed(self) -> bool:
        return MANIFEST_NAME in self.objects

    @property
    def newest_change(self) -> datetime:
        return max(o.modified for o in self.objects.values())


@dataclass(frozen=True)
class Damaged:
    """A committed snapshot that cannot be restored: never counted, listed or chosen."""

    entry: Entry
    problem: str

    @property
    def id(self) -> str:
        return self.entry.id


def scan(store: Store) -> list[Entry]:
    """Every snapshot folder in the store, newest id first."""
    entries: dict[str, Entry] = {}
    for obj in store.list_objects(ROOT):
        snapshot_id = id_of(obj.key)
        if snapshot_id is not None:
            entries.setdefault(snapshot_id, Entry(snapshot_id)).objects[obj.key.rsplit("/", 1)[1]] = obj
    return sorted(entries.values(), key=lambda e: e.id, reverse=True)


def read_manifest(store: Store, snapshot_id: str, *, now: datetime | None = None) -> Manifest:
    """The validated manifest of a snapshot, or VerificationFailed (exit 8). An id ahead of the
    clock is refused too: it sorts before every snapshot the job will take, so trusting it would
    make a stray folder (or a snapshot taken under a wrong clock) 'latest' for good."""
    if time_if_past(snapshot_id, now or datetime.now(UTC)) is None:
        raise VerificationFailed(
            f"snapshot {snapshot_id}: its id lies in the future (a stray folder, or a clock that was "
            "wrong when it was taken)"
        )
    key = manifest_key(snapshot_id)
    return Manifest.from_json(store.get_bytes(key), where=f"{store.url}/{key}", snapshot_id=snapshot_id)


def _require_size(manifest: Manifest, info: ObjectInfo | None) -> None:
    if info is None:
        raise VerificationFailed(f"snapshot {manifest.id}: data object {data_key(manifest.id)} is missing")
    if info.size != manifest.compressed_size:
        raise VerificationFailed(
            f"snapshot {manifest.id}: data object has {info.size} bytes, manifest says "
            f"{manifest.compressed_size}"
        )


def examine(store: Store, entry: Entry, now: datetime) -> Manifest:
    """A committed snapshot proven restorable from the listing (valid manifest, data object with
    the recorded size), or VerificationFailed saying what is wrong."""
    manifest = read_manifest(store, entry.id, now=now)
    _require_size(manifest, entry.objects.get(DATA_NAME))
    return manifest


def committed(
    store: Store, *, entries: list[Entry] | None = None, now: datetime | None = None
) -> Iterator[Manifest | Damaged]:
    """Committed snapshots, newest first (from `entries` when the caller already scanned): each
    restorable one as its Manifest, each other one as Damaged, logged as `snapshot.damaged`. One
    damaged snapshot must not block every later backup, deploy or listing."""
    now = now or datetime.now(UTC)
    for entry in scan(store) if entries is None else entries:
        if not entry.committed:
            continue
        try:
            yield examine(store, entry, now)
        except VerificationFailed as exc:
            get_logger().error("snapshot.damaged", id=entry.id, error=exc.message)
            yield Damaged(entry, exc.message)


def restorable(store: Store, *, entries: list[Entry] | None = None) -> Iterator[Manifest]:
    """The restorable snapshots, newest first; damaged ones are logged and passed over."""
    return (m for m in committed(store, entries=entries) if isinstance(m, Manifest))


def latest(store: Store) -> Manifest | None:
    """The newest restorable snapshot."""
    return next(restorable(store), None)


def latest_readable(store: Store) -> tuple[Manifest | None, str | None]:
    """The newest restorable snapshot, and the newest id in the store that a new id must sort
    after: any folder's, except ids that are not valid times or lie in the future (a stray folder
    there must not push new ids out of the valid, listable range)."""
    entries = scan(store)
    now = datetime.now(UTC)
    newest = next(restorable(store, entries=entries), None)
    return newest, next((e.id for e in entries if time_if_past(e.id, now) is not None), None)


def resolve(store: Store, which: str, *, source: str = "snapshot") -> Manifest:
    """A snapshot chosen by a user (`source` names the flag or variable): 'latest' is the newest
    restorable one that no restore made (a pre-restore snapshot holds the state a restore replaced:
    restoring it as 'latest' would undo that restore); 'before:TIME' the newest restorable one taken
    strictly before TIME; an id must exist and have a valid manifest."""
    which = parse_choice(which, source)
    before = before_time(which)
    if which == LATEST or before is not None:
        found_any = False
        for manifest in restorable(store):
            found_any = True
            if manifest.created < before if before is not None else manifest.reason != PRE_RESTORE:
                return manifest
        if before is not None:
            wanted = f" taken before {before:%Y-%m-%dT%H:%M:%SZ}"
        else:
            wanted = " other than pre-restore ones (each holds what a restore replaced)" if found_any else ""
        raise UsageError(
            f"no restorable snapshot{wanted} in {store.url}: check --store / SNAPSHOT_STORE "
            "(bucket and prefix), or name one by id from 'snapshots list'; damaged ones are logged "
            "as snapshot.damaged"
        )
    if store.head(manifest_key(which)) is None:
        raise UsageError(f"snapshot {which!r} not found in {store.url} (see 'snapshots list')")
    return read_manifest(store, which)


def listed(store: Store, *, since: datetime | None = None, until: datetime | None = None) -> list[Manifest]:
    """The restorable snapshots taken between `since` and `until` (both inclusive), newest first."""
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {since:%Y-%m-%dT%H:%M:%SZ} is after --until {until:%Y-%m-%dT%H:%M:%SZ}")
    return [
        m
        for m in restorable(store)
        if (since is None or m.created >= since) and (until is None or m.created <= until)
    ]


def sha256_of(path: Path, deadline: Deadline) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            deadline.check("verifying the snapshot")
    return digest.hexdigest()


def check_present(store: Store, manifest: Manifest) -> None:
    """The data object exists with the manifest's size, or VerificationFailed (exit 8)."""
    _require_size(manifest, store.head(data_key(manifest.id)))


class _HashingWriter:
    """The decompressor's sink: the database's bytes are hashed on their way to the file."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256 = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.out.write(data)


def _unpack(packed: Path, destination: Path, deadline: Deadline) -> tuple[str, str | None, str | None]:
    """One pass over the compressed bytes: their SHA-256, and the database decompressed into
    `destination` with its SHA-256 (zstd's own frame checksum checked on the way). When the bytes
    do not decompress, the rest is still hashed, so that a damaged object is named as such."""
    compressed = hashlib.sha256()
    failure = None
    with packed.open("rb") as src, destination.open("wb") as out:
        sink = _HashingWriter(out)
        writer = zstandard.ZstdDecompressor().stream_writer(sink, closefd=False)  # type: ignore[arg-type]
        while chunk := src.read(CHUNK):
            compressed.update(chunk)
            if failure is None:
                try:
                    writer.write(chunk)
                except zstandard.ZstdError as exc:
                    failure = str(exc)
            deadline.check("decompressing the snapshot")
        if failure is None:
            try:
                writer.flush()  # type: ignore[no-untyped-call]
            except zstandard.ZstdError as exc:
                failure = str(exc)
    return compressed.hexdigest(), None if failure else sink.sha256.hexdigest(), failure


def fetch(store: Store, manifest: Manifest, destination: Path, *, deadline: Deadline) -> None:
    """The snapshot's database in `destination`, its bytes proved to be the ones the manifest
    describes: both SHA-256 values checked in the one pass that decompresses it (a local store's
    object is read where it is, an S3 object downloaded beside `destination` first).
    VerificationFailed (exit 8) on any mismatch; nothing live is touched."""
    check_present(store, manifest)
    key = data_key(manifest.id)
    local = store.local_path(key)
    packed = local or destination.with_name(destination.name + ".zst")
    try:
        if local is None:
            store.download(key, packed)
        compressed, raw, failure = _unpack(packed, destination, deadline)
    finally:
        if local is None:
            packed.unlink(missing_ok=True)
    if compressed != manifest.compressed_sha256:
        raise VerificationFailed(
            f"snapshot {manifest.id}: compressed SHA-256 is {compressed}, manifest says "
            f"{manifest.compressed_sha256}"
        )
    if failure is not None:
        raise VerificationFailed(f"snapshot {manifest.id}: cannot decompress: {failure}")
    if raw != manifest.raw_sha256:
        raise VerificationFailed(
            f"snapshot {manifest.id}: database SHA-256 is {raw}, manifest says {manifest.raw_sha256}"
        )


def checked_when_taken(manifest: Manifest) -> bool:
    """Whether the snapshot's copy passed the deploy's health checks (quick_check and
    foreign_key_check) when it was taken. A fetched copy with the manifest's SHA-256 is those very
    bytes, so the checks need not be repeated on it."""
    return manifest.quick_check == "ok" and manifest.foreign_key_check == "ok"


def prove(
    store: Store, manifest: Manifest, destination: Path, *, deadline: Deadline, drill: bool = False
) -> None:
    """`fetch`, then the health checks a deploy applies to the live database (quick_check and
    foreign_key_check), unless the snapshot passed them when it was taken; a `drill` (snapshots
    verify --download) runs them anyway, and the full integrity_check too. A snapshot a deploy
    would refuse is not restorable: VerificationFailed (exit 8) naming what is wrong."""
    fetch(store, manifest, destination, deadline=deadline)
    if checked_when_taken(manifest) and not drill:
        return
    try:
        with database.opened(destination) as conn:
            problems = database.quick_check(conn, full=True) if drill else []
            if problems:
                raise VerificationFailed(
                    f"snapshot {manifest.id}: integrity_check failed: {'; '.join(problems[:3])}"
                )
            database.require_healthy(conn, f"snapshot {manifest.id}")
    except DatabaseProblem as exc:
        raise VerificationFailed(
            f"{exc.message}: a deploy would refuse it, so it is not restorable; choose another "
            "snapshot ('snapshots list')"
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise VerificationFailed(f"snapshot {manifest.id}: {exc}") from exc


def verify(store: Store, which: str, *, download: bool, deadline: Deadline) -> dict[str, Any]:
    """`snapshots verify`: present with the right size; with `download`, a full restore drill (`prove`) in
    a temporary directory that touches nothing live. Unlike restore, 'latest' here is the newest
    committed snapshot even when it is damaged: a check must not look past a broken backup (a
    stray folder dated in the future is not a backup, though)."""
    which = parse_choice(which, "snapshots verify ID")
    if which == LATEST:
        now = datetime.now(UTC)
        newest = next((e for e in scan(store) if e.committed and time_if_past(e.id, now) is not None), None)
        if newest is None:
            raise UsageError(f"no committed snapshot in {store.url}: check --store / SNAPSHOT_STORE")
        manifest = read_manifest(store, newest.id)
    else:
        manifest = resolve(store, which)
    check_present(store, manifest)
    if download:
        with tempfile.TemporaryDirectory(prefix="relayer-job-verify-") as scratch:
            prove(store, manifest, Path(scratch) / f"{manifest.id}.db", deadline=deadline, drill=True)
    get_logger().info("snapshot.verified", id=manifest.id, downloaded=download)
    checked = "ok" if download else None
    return {
        "id": manifest.id,
        "downloaded": download,
        "integrity_check": checked,
        "foreign_key_check": checked,
    }


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


def _delete_snapshot(store: Store, entry: Entry) -> None:
    """Un-commit (manifest first), then delete the rest: never a manifest without its data."""
    if entry.committed:
        store.delete([f"{ROOT}{entry.id}/{MANIFEST_NAME}"])
    store.delete([f"{ROOT}{entry.id}/{name}" for name in entry.objects if name != MANIFEST_NAME])


def prune(
    store: Store,
    *,
    policy: retention.Policy,
    apply: bool,
    delete_damaged: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply the retention `policy` to the restorable snapshots; damaged ones are reported and
    deleted only with `delete_damaged`; leftovers (no manifest) older than an hour are deleted.
    Nothing is deleted unless `apply`."""
    retention.validate(policy)
    log = get_logger()
    now = now or datetime.now(UTC)
    entries = scan(store)
    found = list(committed(store, entries=entries, now=now))
    good = [m for m in found if isinstance(m, Manifest)]
    damaged = [d for d in found if isinstance(d, Damaged)]
    kept = retention.keep((retention.Candidate(m.id, m.created, m.reason) for m in good), policy, now)
    leftovers = [e for e in entries if not e.committed and now - e.newest_change > LEFTOVER_AGE]
    plan: dict[str, Any] = {
        "store": store.url,
        "keep": [m.id for m in good if m.id in kept],
        "delete": [m.id for m in good if m.id not in kept],
        "damaged": [d.id for d in damaged],
        "leftovers": [e.id for e in leftovers],
        "kept_because": {i: ", ".join(why) for i, why in kept.items()},
        "problems": {d.id: d.problem for d in damaged},
        "snapshots": {m.id: {"created_at": m.created_at, "reason": m.reason} for m in good},
        "delete_damaged": delete_damaged,
        "applied": apply,
    }
    if not apply:
        log.info("prune.planned", **plan, hint="pass --apply to delete")
        return plan
    by_id = {e.id: e for e in entries}
    for snapshot_id in plan["delete"]:
        _delete_snapshot(store, by_id[snapshot_id])
        log.info("snapshot.deleted", id=snapshot_id)
    for item in damaged if delete_damaged else []:
        _delete_snapshot(store, item.entry)
        log.info("snapshot.damaged_deleted", id=item.id, problem=item.problem)
    for entry in leftovers:
        _delete_snapshot(store, entry)
        log.info("snapshot.leftover_deleted", id=entry.id)
    plan["aborted_uploads"] = store.abort_stale_uploads(ROOT, now - LEFTOVER_AGE)
    return plan
