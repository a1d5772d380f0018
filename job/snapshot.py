"""Taking a snapshot: a consistent private copy (in-kernel, under a short read lock), then one
streaming pass of zstd + SHA-256 straight into the store while quick_check and foreign_key_check
run on the copy, the upload verified, and the manifest last as the commit point. A database that
provably has not changed since the newest snapshot is not copied at all, and one whose content is
the same is not committed again."""

from __future__ import annotations

import calendar
import contextvars
import functools
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

from job import __version__, catalog, database, inuse, ledger, newdb, priority, scratch
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, require_free_space
from job.errors import DatabaseProblem, EnvironmentRefused
from job.lock import held
from job.log import get_logger
from job.manifest import Manifest, data_key, make_id, manifest_key, time_if_past
from job.progress import Progress
from job.retention import WAYS_BACK
from job.store import Store, Upload, open_store

ZSTD_LEVEL = 1
# One zstd worker more than cores: the main thread (reading, hashing) and the checks leave gaps.
ZSTD_THREADS = (os.cpu_count() or 1) + 1
CHUNK = 4 << 20
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


class _HashingSink:
    """Where the compressor writes: hashes and counts the compressed bytes on their way to the store."""

    def __init__(self, upload: Upload) -> None:
        self.upload, self.sha256, self.size = upload, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.upload.write(data)
        return len(data)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class Packed:
    raw_size: int
    raw_sha256: str
    compressed_size: int
    compressed_sha256: str


class Copying:
    """The private copy, made on a thread so that compression can read each part of it as soon as
    it is copied (unless yielding: see _compress_behind_the_copy)."""

    def __init__(self, db_path: Path, copy: Path, deadline: Deadline, *, gentle: bool) -> None:
        self.changed = threading.Condition()
        self.copied, self.total, self.done = 0, -1, False
        self.result: tuple[database.DatabaseInfo, database.FileState | None] | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.nice: object = None
        run = functools.partial(self._run, db_path, copy, deadline, gentle)
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(run,), name="snapshot-copy"
        )
        self.thread.start()

    def _run(self, db_path: Path, copy: Path, deadline: Deadline, gentle: bool) -> None:
        started = time.monotonic()
        self.nice = priority.nice_of_this_thread()
        try:
            self.result = _copy(db_path, copy, deadline, self._progress, gentle=gentle)
            size = copy.stat().st_size
            self._progress(size, size)
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        finally:
            with self.changed:
                self.done, self.seconds = True, time.monotonic() - started
                self.changed.notify_all()

    def _progress(self, copied: int, total: int) -> None:
        with self.changed:
            self.copied, self.total = copied, total
            self.changed.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self.changed:
            while not (ready() or self.done):
                self.changed.wait(0.5)
            if self.error is not None:
                raise self.error

    def size(self) -> int:
        """The size of the copy, once known (the copy has begun)."""
        self._wait(lambda: self.total >= 0)
        return self.total

    def available(self, offset: int) -> int:
        """How far the copy may be read: beyond `offset`, or to its end."""
        self._wait(lambda: self.copied > offset)
        return self.copied

    def finish(self) -> tuple[database.DatabaseInfo, database.FileState | None]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def compress(source: Path, upload: Upload, *, deadline: Deadline, copying: Copying) -> Packed:
    """zstd (multithreaded, frame checksum on) of `source` straight into `upload`, with SHA-256 of
    the input and of the output, in one pass, reading `source` as it is being copied; memory
    bounded by the chunk size (and the upload's parts) whatever the database size."""
    raw_size = copying.size()
    progress = Progress("snapshot.compress_progress", raw_size)
    raw = hashlib.sha256()
    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, threads=ZSTD_THREADS, write_checksum=True, write_content_size=True
    )
    sink = _HashingSink(upload)
    writing = compressor.stream_writer(sink, size=raw_size, closefd=False)  # type: ignore[arg-type]
    buffer = memoryview(bytearray(CHUNK))  # one buffer reused: no heap churn at any size
    with source.open("rb", buffering=0) as src, writing as writer:
        done = 0
        while done < raw_size:
            read = src.readinto(buffer[: min(CHUNK, copying.available(done) - done)])
            if not read:
                raise EnvironmentRefused(f"the snapshot's copy {source} ended early")
            chunk = buffer[:read]
            raw.update(chunk)
            writer.write(chunk)
            done += read
            progress(done)
            deadline.check("compressing the snapshot")
    return Packed(raw_size, raw.hexdigest(), sink.size, sink.sha256.hexdigest())


def _migrations_of(conn: sqlite3.Connection) -> tuple[list[dict[str, str | None]], int]:
    """The ledger of the copy (names and checksums) and its schema version."""
    entries = sorted(ledger.read(conn).values(), key=lambda e: e.name)
    numbers = [int(m.group(1)) for e in entries if (m := re.match(r"^(\d+)_", e.name))]
    return [{"name": e.name, "checksum": e.checksum} for e in entries], max(numbers, default=0)


def new_id(created: time.struct_time, suffix: str, *, after: str | None) -> str:
    """`<UTC time>-<8 hex digits>`, later than `after` (the newest id), so that ids sort in the
    order snapshots were taken even when two fall in the same second. An `after` that is not a
    valid id or lies in the future is ignored: whatever is in the store, the new id is valid."""
    stamp = calendar.timegm(created)
    previous = time_if_past(after, datetime.fromtimestamp(stamp, UTC)) if after is not None else None
    if previous is not None:
        stamp = max(stamp, int(previous.timestamp()) + 1)
    return make_id(stamp, suffix)


def remove_scratch_leftovers(directory: Path) -> None:
    """Scratch copies of killed earlier runs. A run holds an flock on its copy (scratch_file with
    claim), so the copy of a snapshot still running beside this one (both under the shared disk
    lock, perhaps in another container, perhaps with the same pid) is left alone."""
    for leftover in directory.glob(f"{SCRATCH_PREFIX}*"):
        if database.in_use(leftover):
            continue
        leftover.unlink(missing_ok=True)
        get_logger().info("snapshot.scratch_removed", path=str(leftover))


@dataclass(frozen=True)
class Checks:
    """What the scratch copy says about itself, found while it is being compressed."""

    quick_check: list[str]
    foreign_keys: list[str]
    migrations: list[dict[str, str | None]]
    schema_version: int


def _check_copy(copy: Path) -> Checks:
    """quick_check, foreign_key_check and the ledger of the copy. The copy is opened immutable
    (no locks): the compressing thread reads the same file with plain I/O meanwhile."""
    with database.opened(database.immutable_uri(copy)) as conn:
        problems = database.quick_check(conn)
        foreign_keys = database.foreign_key_problems(conn) if not problems else []
        migrations, schema_version = _migrations_of(conn)
    return Checks(problems, foreign_keys, migrations, schema_version)


def _compress_behind_the_copy(
    copy: Path, upload: Upload, deadline: Deadline, copying: Copying, *, yielding: bool
) -> tuple[Packed, object]:
    """compress the copy while it is being made; when `yielding`, only once it is made, and at low
    CPU and I/O priority (the zstd workers and upload threads it starts inherit it): the copy holds
    SQLite's read lock while the other process's writes wait, and is fastest with the machine to
    itself. Its nice value, for the log."""
    if yielding:
        copying.finish()
        priority.lower_this_thread()
    return compress(copy, upload, deadline=deadline, copying=copying), priority.nice_of_this_thread()


def _checks_once_copied(copying: Copying, copy: Path, *, yielding: bool) -> Checks:
    copying.finish()
    if yielding:
        priority.lower_this_thread()
    return _check_copy(copy)


def _yielding_to(db_path: Path, reason: str) -> list[str]:
    """The processes a snapshot gives way to: whoever else has the database open (the relayer,
    beside a periodic or manual snapshot); its copy is gentle (database.raw_copy) and compression
    and checks wait for it and run at low priority. With nobody there (a
    deploy before the relayer starts, a restore) they run at full speed, and so does the final
    snapshot, which must fit in the shutdown budget."""
    beside = [] if reason == catalog.SHUTDOWN else inuse.seen_open(db_path)
    if beside:
        get_logger().info(
            "snapshot.yielding",
            to=beside[:3],
            note="the copy is made without SQLite's lock, then compared and patched under it; "
            f"compression and checks after the copy, at nice +{priority.NICE} and the lowest I/O priority",
        )
    return beside


def require_room(db_path: Path) -> None:
    """Room for a snapshot's private copy beside the database (its size and a margin), or
    EnvironmentRefused (exit 4) saying what to free."""
    require_free_space(
        db_path.parent,
        db_path.stat().st_size + FREE_SPACE_MARGIN,
        what=f"a snapshot's private copy of {db_path.name} (its size plus 16 MiB)",
    )


def unchanged_since(db_path: Path, newest: Manifest | None) -> bool:
    """Whether the database is provably byte for byte the one `newest` (a restorable snapshot)
    holds: its FileState, read under SQLite's lock, equals the one recorded in the manifest. Never
    true for WAL databases or manifests without a recorded state: then the caller snapshots."""
    if newest is None or newest.source is None:
        return False
    state = database.file_state(db_path)
    return state is not None and state.as_dict() == newest.source


def healthy_and_unchanged(db_path: Path, store: Store) -> Manifest | None:
    """The newest snapshot, when the database provably has not changed since it and that snapshot's
    copy passed quick_check and foreign_key_check: the database's health need not be checked
    again (nothing was written since it was)."""
    newest, _ = catalog.latest_readable(store)
    if newest is None or newest.quick_check != "ok" or newest.foreign_key_check != "ok":
        return None
    return newest if unchanged_since(db_path, newest) else None


def _copy(
    db_path: Path, copy: Path, deadline: Deadline, progress: database.ProgressFn, *, gentle: bool
) -> tuple[database.DatabaseInfo, database.FileState | None]:
    """A consistent private copy: in-kernel under a short SHARED lock for rollback-journal files
    (when `gentle`, made without it and only compared and patched under it: database.raw_copy);
    the backup API over one read transaction for WAL (then turned into a self-contained
    rollback-journal file, which is what a restore needs)."""
    copied = database.raw_copy(db_path, copy, deadline=deadline, progress=progress, gentle=gentle)
    if copied is not None:
        return copied
    with database.opened(db_path) as live:
        page_progress = Progress("snapshot.copy_progress", database.info(live).size)
        page_size = database.info(live).page_size
        details = database.copy_consistent(
            live, copy, deadline=deadline, progress=lambda done, _total: page_progress(done * page_size)
        )
    with database.opened(copy) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    return details, None


def create(
    db_path: Path,
    store: Store,
    *,
    reason: str,
    deadline: Deadline,
    force: bool = False,
    way_back: bool = False,
) -> dict[str, Any]:
    """Snapshot the database at `db_path` into `store`. The caller holds the disk lock.

    Unless `force`: nothing is copied when the database provably has not changed since the newest
    snapshot (unchanged_since), and nothing is committed when its content turns out to be the same
    (same SHA-256 and migrations; the streamed upload is aborted instead). A `way_back` (taken
    before a write or a restore) reuses the newest snapshot only when that is a way back too:
    retention keeps those for its days, and may prune an equal periodic one much sooner."""
    log = get_logger()
    directory = db_path.parent
    remove_scratch_leftovers(directory)
    newest, newest_id = catalog.latest_readable(store)
    reusable = None if force or (way_back and (newest is None or newest.reason not in WAYS_BACK)) else newest
    if unchanged_since(db_path, reusable):
        assert reusable is not None
        log.info("snapshot.unchanged", id=reusable.id, proof="file state")
        return {"snapshot_id": reusable.id, "unchanged": True, "store": store.url}
    timings: dict[str, float] = {}
    started = time.monotonic()
    created = time.gmtime()
    snapshot_id = new_id(created, secrets.token_hex(4), after=newest_id)
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-"
    with database.scratch_file(directory, prefix, ".db", claim=True) as copy:
        require_room(db_path)
        yielding = bool(_yielding_to(db_path, reason))
        copying = Copying(db_path, copy, deadline, gentle=yielding)
        upload = store.open_upload(data_key(snapshot_id))
        try:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="snapshot") as pool:
                checking = pool.submit(
                    contextvars.copy_context().run, _checks_once_copied, copying, copy, yielding=yielding
                )
                compress_it = functools.partial(_compress_behind_the_copy, yielding=yielding)
                compressing = pool.submit(
                    contextvars.copy_context().run, compress_it, copy, upload, deadline, copying
                )
                packed, compress_nice = compressing.result()
                details, state = copying.finish()
                checks = checking.result()
            timings["copy_s"] = copying.seconds
            timings["compress_s"] = time.monotonic() - started
            if checks.quick_check:
                raise DatabaseProblem(
                    f"the snapshot copy of {db_path} failed quick_check: "
                    f"{'; '.join(checks.quick_check[:3])}; nothing was uploaded"
                )
            if reusable is not None and reusable.same_content(packed.raw_sha256, checks.migrations):
                upload.abort()
                log.info("snapshot.unchanged", id=reusable.id, raw_sha256=packed.raw_sha256, proof="content")
                return {"snapshot_id": reusable.id, "unchanged": True, "store": store.url}
            mark = time.monotonic()
            uploaded = upload.commit(sha256=packed.compressed_sha256)
        except OSError as exc:
            upload.abort()
            raise EnvironmentRefused(
                f"cannot write the snapshot's scratch copy in {directory}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            upload.abort()
            raise
        finally:
            copying.thread.join()  # the copy's lock and descriptors are gone before its file is
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
        foreign_key_check="ok" if not checks.foreign_keys else "; ".join(checks.foreign_keys[:3]),
        migrations=checks.migrations,
        schema_version=checks.schema_version,
        job_version=__version__,
        deploy=deploy_context(),
        source=state.as_dict() if state is not None else None,
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
        "schema_version": checks.schema_version,
        **{k: round(v, 3) for k, v in timings.items()},
        "priority": {"copy": copying.nice, "compress": compress_nice},
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
