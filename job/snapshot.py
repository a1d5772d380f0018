"""Taking a snapshot: consistent copy, quick_check, one streaming pass of zstd + SHA-256, upload,
verify, and the manifest last as the commit point. Unchanged databases are not uploaded again."""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from job import __version__, catalog, database, ledger, newdb, scratch
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, require_free_space
from job.errors import DatabaseProblem, EnvironmentRefused, VerificationFailed
from job.lock import held
from job.log import get_logger
from job.manifest import Manifest, data_key, make_id, manifest_key, time_if_past
from job.progress import Progress
from job.store import Store, open_store

ZSTD_LEVEL = 1
CHUNK = 1 << 20
SCRATCH_PREFIX = ".relayer-job-snapshot-"
EMPTY = "snapshot it (an empty snapshot would become the newest one)"
FREE_SPACE_MARGIN = 16 << 20
DEPLOY_CONTEXT = (
    "RENDER_GIT_COMMIT",
    "RENDER_GIT_BRANCH",
    "RENDER_GIT_REPO_SLUG",
    "RENDER_SERVICE_ID",
    "RENDER_SERVICE_NAME",
    "RENDER_SERVICE_TYPE",
    "RENDER_INSTANCE_ID",
    "RENDER_DEPLOY_ID",
    "RENDER_EXTERNAL_HOSTNAME",
)


def deploy_context(env: dict[str, str] | None = None) -> dict[str, str]:
    """The deploy's identity from Render's variables: an allow-list, so no secret can slip in."""
    env = dict(os.environ) if env is None else env
    return {k: env[k] for k in DEPLOY_CONTEXT if env.get(k)}


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


@dataclass(frozen=True)
class Packed:
    raw_size: int
    raw_sha256: str
    compressed_size: int
    compressed_sha256: str


def compress(source: Path, target: Path, *, deadline: Deadline) -> Packed:
    """zstd (multithreaded, frame checksum on) and SHA-256 of input and output, in one pass with
    memory bounded by the chunk size whatever the database size."""
    raw_size = source.stat().st_size
    progress = Progress("snapshot.compress_progress", raw_size)
    raw = hashlib.sha256()
    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, threads=-1, write_checksum=True, write_content_size=True
    )
    with source.open("rb") as src, target.open("wb") as out:
        sink = _HashingWriter(out)
        with compressor.stream_writer(sink, size=raw_size, closefd=False) as writer:  # type: ignore[arg-type]
            done = 0
            while chunk := src.read(CHUNK):
                raw.update(chunk)
                writer.write(chunk)
                done += len(chunk)
                progress(done)
                deadline.check("compressing the snapshot")
    return Packed(raw_size, raw.hexdigest(), sink.size, sink.sha256.hexdigest())


def _migrations_of(conn: sqlite3.Connection) -> tuple[list[dict[str, str | None]], int]:
    """The ledger of the copy (names and checksums) and its schema version."""
    entries = sorted(ledger.read(conn).values(), key=lambda e: e.name)
    numbers = [int(m.group(1)) for e in entries if (m := re.match(r"^(\d+)_", e.name))]
    return [{"name": e.name, "checksum": e.checksum} for e in entries], max(numbers, default=0)


def new_id(created: time.struct_time, raw_sha256: str, *, after: str | None) -> str:
    """`<UTC time>-<hash prefix>`, later than `after` (the newest id), so that ids sort in the
    order snapshots were taken even when two fall in the same second. An `after` that is not a
    valid id or lies in the future is ignored: whatever is in the store, the new id is valid."""
    stamp = calendar.timegm(created)
    previous = time_if_past(after, datetime.fromtimestamp(stamp, UTC)) if after is not None else None
    if previous is not None:
        stamp = max(stamp, int(previous.timestamp()) + 1)
    return make_id(stamp, raw_sha256)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_scratch_leftovers(directory: Path) -> None:
    """Scratch files of killed earlier runs. Names carry the writer's pid, so files of a snapshot
    still running beside this one (both under the shared lock) are left alone."""
    for leftover in directory.glob(f"{SCRATCH_PREFIX}*"):
        match = re.match(rf"{re.escape(SCRATCH_PREFIX)}(\d+)-", leftover.name)
        if match and (int(match.group(1)) == os.getpid() or _alive(int(match.group(1)))):
            continue
        leftover.unlink(missing_ok=True)
        get_logger().info("snapshot.scratch_removed", path=str(leftover))


def create(
    db_path: Path, store: Store, *, reason: str, deadline: Deadline, force: bool = False
) -> dict[str, Any]:
    """Snapshot the database at `db_path` into `store`. The caller holds the disk lock."""
    log = get_logger()
    directory = db_path.parent
    remove_scratch_leftovers(directory)
    timings: dict[str, float] = {}
    started = time.monotonic()
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-"
    with (
        database.scratch_file(directory, prefix, ".db") as copy,
        database.scratch_file(directory, prefix, ".db.zst") as packed_path,
    ):
        try:
            with database.opened(db_path) as live:
                live_info = database.info(live)
                size = live_info.size
                require_free_space(directory, size + size // 4 + FREE_SPACE_MARGIN, what="the snapshot")
                page_progress = Progress("snapshot.copy_progress", size)
                page_size = live_info.page_size
                details = database.copy_consistent(
                    live,
                    copy,
                    deadline=deadline,
                    progress=lambda done, _total: page_progress(done * page_size),
                )
            timings["copy_s"] = time.monotonic() - started

            mark = time.monotonic()
            with database.opened(copy) as conn:
                problems = database.quick_check(conn)
                if problems:
                    raise DatabaseProblem(
                        f"the snapshot copy of {db_path} failed quick_check: {'; '.join(problems[:3])}; "
                        "nothing was uploaded"
                    )
                if details.journal_mode == "wal":
                    conn.execute("PRAGMA journal_mode = DELETE")  # a self-contained file to restore
                migrations, schema_version = _migrations_of(conn)
            timings["check_s"] = time.monotonic() - mark

            mark = time.monotonic()
            packed = compress(copy, packed_path, deadline=deadline)
            timings["compress_s"] = time.monotonic() - mark
        except OSError as exc:
            raise EnvironmentRefused(
                f"cannot write the snapshot's scratch files in {directory}: {exc.strerror or exc}"
            ) from exc

        newest, newest_id = catalog.latest_readable(store)
        if not force and newest is not None and newest.same_content(packed.raw_sha256, migrations):
            try:
                catalog.check_present(store, newest)
            except VerificationFailed as exc:
                log.error("snapshot.damaged", id=newest.id, error=exc.message, action="uploading anew")
            else:
                log.info("snapshot.unchanged", id=newest.id, raw_sha256=packed.raw_sha256)
                return {"snapshot_id": newest.id, "unchanged": True, "store": store.url}

        created = time.gmtime()
        snapshot_id = new_id(created, packed.raw_sha256, after=newest_id)
        mark = time.monotonic()
        uploaded = store.put_file(data_key(snapshot_id), packed_path, sha256=packed.compressed_sha256)
        timings["upload_s"] = time.monotonic() - mark
        log.info(
            "snapshot.uploaded",
            id=snapshot_id,
            key=data_key(snapshot_id),
            bytes=uploaded.size,
            checksum_verified_by_store=uploaded.checksum_verified,
        )

    manifest = Manifest(
        id=snapshot_id,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", created),
        reason=reason,
        source_db=str(db_path.absolute()),
        raw_size=packed.raw_size,
        page_size=details.page_size,
        page_count=details.page_count,
        journal_mode=details.journal_mode,
        sqlite_version=details.sqlite_version,
        raw_sha256=packed.raw_sha256,
        compressed_size=packed.compressed_size,
        compressed_sha256=packed.compressed_sha256,
        compression={"algorithm": "zstd", "level": ZSTD_LEVEL, "frame_checksum": True},
        quick_check="ok",
        migrations=migrations,
        schema_version=schema_version,
        job_version=__version__,
        deploy=deploy_context(),
    )
    deadline.check("committing the snapshot")
    store.put_bytes(manifest_key(snapshot_id), manifest.to_json())
    facts = {
        "snapshot_id": snapshot_id,
        "unchanged": False,
        "store": store.url,
        "raw_size": packed.raw_size,
        "compressed_size": packed.compressed_size,
        "ratio": round(packed.raw_size / max(packed.compressed_size, 1), 2),
        "schema_version": schema_version,
        **{k: round(v, 3) for k, v in timings.items()},
    }
    log.info("snapshot.committed", **facts)
    return facts


def run(config: Config, *, reason: str, if_db_exists: bool, force: bool = False) -> dict[str, Any]:
    """`relayer-job snapshot`: under the disk lock, snapshot the database into the configured store."""
    deadline = Deadline(config.deadline)
    check_location(config)
    store = open_store(config.store_url, config.s3, deadline)
    if not config.db_path.exists():
        if if_db_exists:
            get_logger().info("snapshot.skipped", reason="no database", db=str(config.db_path))
            return {"snapshot_id": None, "skipped": "no database"}
        raise DatabaseProblem(
            f"database {config.db_path} does not exist, so there is nothing to snapshot; check "
            "--db / DATABASE_PATH, or pass --if-db-exists to treat that as success"
        )
    with held(config.lock_file, timeout=config.lock_timeout, command="snapshot", shared=True):
        scratch.remove_leftovers(config.db_path.parent)
        newdb.refuse_empty_start(config, doing=EMPTY, deadline=deadline, store=store)
        return create(config.db_path, store, reason=reason, deadline=deadline, force=force)
