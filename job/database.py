"""The live SQLite database: opening it the way the relayer does, checking it, copying it consistently.

Rules from sqlite.md: never open()/close() a descriptor of the database file in this process while
SQLite holds a lock on it (closing any fd drops the process's POSIX locks: raw_copy's own descriptor
is opened before and closed after its connection); a copy is consistent only when made under one
read transaction (raw_copy, or the online backup API for WAL); connections run in SQLite's own
autocommit mode so that every transaction is explicit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.deadline import Deadline
from job.errors import DatabaseInUse, DatabaseLocked, DatabaseProblem, sqlite_cause

BUSY_TIMEOUT_MS = 10_000
COPY_STEP_PAGES = 4096


def connect(target: Path | str, *, create: bool = False) -> sqlite3.Connection:
    """Open a connection with explicit transactions, foreign keys ON (as the relayer) and a busy
    timeout. Without `create`, a missing file is an error instead of a new empty database."""
    mode = "rwc" if create else "rw"
    uri = isinstance(target, str) and (target == ":memory:" or target.startswith("file:"))
    path = str(target) if uri else f"file:{_quote(Path(target))}?mode={mode}"
    kwargs: dict[str, Any] = {"uri": True, "check_same_thread": False}
    if sys.version_info >= (3, 12):
        kwargs["autocommit"] = True  # pinned: the default changes in a future Python
    else:
        kwargs["isolation_level"] = None
    try:
        conn: sqlite3.Connection = sqlite3.connect(path, **kwargs)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        cause = sqlite_cause(exc, f"cannot open {target}")
        if cause is not None:
            raise cause from exc
        raise DatabaseProblem(f"cannot open {target} as a SQLite database: {exc}") from exc
    return conn


def immutable_uri(path: Path) -> str:
    """A URI that opens a private file read-only and without any locking: for scratch copies that
    this process also reads with plain I/O (closing those descriptors would drop SQLite's locks)."""
    return f"file:{_quote(path)}?mode=ro&immutable=1"


def _quote(path: Path) -> str:
    return str(path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")


@contextlib.contextmanager
def opened(target: Path | str, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    conn = connect(target, create=create)
    try:
        yield conn
    finally:
        conn.close()


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Start a write transaction now (not at the first write, where a busy database fails at once
    whatever the busy timeout); a database locked by another process is exit 3."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseLocked(
                f"the database is locked by another process ({exc}); is the relayer running? "
                "stop it, or let 'gate' run the job before it starts"
            ) from exc
        raise


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if anything in the block fails."""
    begin_immediate(conn)
    try:
        yield
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@dataclass(frozen=True)
class DatabaseInfo:
    page_size: int
    page_count: int
    journal_mode: str
    sqlite_version: str

    @property
    def size(self) -> int:
        return self.page_size * self.page_count


def info(conn: sqlite3.Connection) -> DatabaseInfo:
    def pragma(name: str) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    return DatabaseInfo(
        page_size=int(pragma("page_size")),
        page_count=int(pragma("page_count")),
        journal_mode=str(pragma("journal_mode")),
        sqlite_version=sqlite3.sqlite_version,
    )


def quick_check(conn: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """Problems found by quick_check (or integrity_check); an empty list means 'ok'."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}(20)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def foreign_key_problems(conn: sqlite3.Connection, limit: int = 10) -> list[str]:
    rows = conn.execute("PRAGMA foreign_key_check").fetchmany(limit)
    return [f"{table} rowid {rowid} -> {parent} (constraint {fk})" for table, rowid, parent, fk in rows]


def require_healthy(conn: sqlite3.Connection, what: str) -> None:
    """quick_check and foreign_key_check, or DatabaseProblem (exit 5) naming what is wrong."""
    problems = quick_check(conn)
    if problems:
        raise DatabaseProblem(f"{what} failed quick_check: {'; '.join(problems[:3])}")
    require_foreign_keys(conn, what)


def require_foreign_keys(conn: sqlite3.Connection, what: str) -> None:
    """foreign_key_check, or DatabaseProblem (exit 5) naming the first violations."""
    fk = foreign_key_problems(conn)
    if fk:
        raise DatabaseProblem(f"{what} has foreign key violations: {'; '.join(fk[:3])}")


ProgressFn = Callable[[int, int], None]
RAW_COPY_CHUNK = 16 << 20  # bytes copied in-kernel between two deadline checks


@dataclass(frozen=True)
class FileState:
    """What identifies one version of a rollback-journal database file: SQLite's file change
    counter (incremented by every transaction that changes the file) and page count from the
    header, and the file's inode, size, ctime and mtime. Equal states prove equal content: a
    commit changes the counter, any write changes ctime, a replaced file has another inode."""

    change_counter: int
    page_count: int
    size: int
    inode: int
    ctime_ns: int
    mtime_ns: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _rollback_journal(header: bytes) -> bool:
    """The header's file format read/write versions say legacy (rollback journal), not WAL."""
    return header[18:20] == b"\x01\x01"


def _state(header: bytes, st: os.stat_result) -> FileState | None:
    """The state, or None when the header cannot prove it: a WAL database (commits live in the
    -wal file and leave the counter alone), or a header whose page count is stale."""
    if len(header) < 100 or not _rollback_journal(header):
        return None
    counter, pages = struct.unpack(">II", header[24:32])
    if struct.unpack(">I", header[92:96])[0] != counter:
        return None
    return FileState(counter, pages, st.st_size, st.st_ino, st.st_ctime_ns, st.st_mtime_ns)


@contextlib.contextmanager
def _read_locked(
    db_path: Path, before_lock: Callable[[int], None] | None = None
) -> Iterator[tuple[sqlite3.Connection, int]]:
    """A read transaction on `db_path` (SQLite's SHARED lock: no writer can change the file, a hot
    journal is rolled back first) and a plain descriptor on the same file, which `before_lock` may
    use before the lock is taken. The descriptor is closed only after the connection: closing any
    descriptor of the file drops all of this process's POSIX locks on it, SQLite's included
    (sqlite.md)."""
    fd = os.open(db_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if before_lock is not None:
            before_lock(fd)
        with opened(db_path) as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                yield conn, fd
            finally:
                conn.execute("ROLLBACK")
    finally:
        os.close(fd)


def file_state(db_path: Path) -> FileState | None:
    """The database's current FileState (None for WAL or an unprovable header); cheap: one read
    transaction and 100 bytes, whatever the size of the database."""
    with _read_locked(db_path) as (_conn, fd):
        return _state(os.pread(fd, 100, 0), os.fstat(fd))


def raw_copy(
    db_path: Path,
    destination: Path,
    *,
    deadline: Deadline,
    progress: ProgressFn | None = None,
    gentle: bool = False,
) -> tuple[DatabaseInfo, FileState] | None:
    """Copy a rollback-journal database file byte for byte while holding SQLite's SHARED lock only
    for that copy: a writer waits at most that long (a pinned backup-API copy holds it for the
    whole, slower, page-by-page copy). The state is read in the same lock, so it describes exactly
    the copied bytes. None for a WAL database (the main file alone is not the database; use
    copy_consistent). `progress(copied, total)` follows the copy, so that a reader can work on the
    copied part meanwhile.

    The copy is in the kernel. When `gentle` (another process is using the database), the file is
    first copied without the lock, and under the lock only compared and patched where it changed
    since: reading two cached files costs a fraction of writing a new one, whose dirty pages the
    kernel may throttle (at 4 GiB here a kernel copy held the lock for 3-7 s, a comparison ~1.2 s).
    """
    with destination.open("r+b") as out:
        with contextlib.suppress(OSError):  # preallocating makes the copy under the lock faster
            os.posix_fallocate(out.fileno(), 0, max(db_path.stat().st_size, 1))

        def copy_unlocked(fd: int) -> None:
            """Only a head start for the comparison, which decides every byte: it stops at whatever
            end the file has (a writer's rollback may shrink it meanwhile) or on any error (which
            the locked pass meets again if it lasts), and not at all for a WAL database."""
            if not _rollback_journal(os.pread(fd, 20, 0)):
                return
            size, done = os.fstat(fd).st_size, 0
            with contextlib.suppress(OSError):  # an early end included
                while done < size:
                    deadline.check("copying the database")
                    done += _copy_range(fd, out.fileno(), done, min(RAW_COPY_CHUNK, size - done))

        with _read_locked(db_path, copy_unlocked if gentle else None) as (conn, fd):
            _require_same_file(db_path, fd)
            state = _state(os.pread(fd, 100, 0), os.fstat(fd))
            if state is None:
                out.truncate(0)  # leave an empty file for the backup API
                return None
            details = info(conn)
            step = _patch_range if gentle else _copy_range
            copied = 0
            while copied < state.size:
                deadline.check("copying the database")
                copied += step(fd, out.fileno(), copied, min(RAW_COPY_CHUNK, state.size - copied))
                if progress is not None:
                    progress(copied, state.size)
        out.truncate(copied)
    return details, state


def _require_same_file(db_path: Path, fd: int) -> None:
    """The descriptor copied from is the file SQLite locked: not one renamed away meanwhile (only
    a process ignoring the disk lock could do that)."""
    held, now = os.fstat(fd), db_path.stat()
    if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
        raise DatabaseInUse(
            f"{db_path} was replaced by another file while it was being copied: a process that does "
            "not take the disk lock is writing it; stop it"
        )


def _copy_range(source: int, target: int, offset: int, count: int) -> int:
    done = 0
    while done < count:
        moved = os.copy_file_range(source, target, count - done, offset + done, offset + done)
        if moved == 0:
            raise OSError(errno.EIO, "the database file ended early while copying it")
        done += moved
    return done


PATCH_CHUNK = 1 << 20


def _patch_range(source: int, target: int, offset: int, count: int) -> int:
    """Make `count` bytes of `target` at `offset` equal to `source`'s, writing only the chunks that
    differ (a chunk of a shorter target differs)."""
    new, old = bytearray(PATCH_CHUNK), bytearray(PATCH_CHUNK)
    done = 0
    while done < count:
        at, want = offset + done, min(PATCH_CHUNK, count - done)
        got = os.preadv(source, [memoryview(new)[:want]], at)
        if got == 0:
            raise OSError(errno.EIO, "the database file ended early while copying it")
        had = os.preadv(target, [memoryview(old)[:got]], at)
        same = had == got and (new == old if got == PATCH_CHUNK else new[:got] == old[:got])
        if not same:
            written = 0
            while written < got:
                written += os.pwrite(target, memoryview(new)[written:got], at + written)
        done += got
    return done


def copy_consistent(
    source: sqlite3.Connection,
    destination: Path,
    *,
    deadline: Deadline,
    progress: ProgressFn | None = None,
) -> DatabaseInfo:
    """Copy `source` into `destination` with the online backup API, in steps over one pinned read
    transaction: the copy is one point in time even while other processes write (they wait, or in
    WAL mode go on), the deadline is checked between steps, and a hot journal is rolled back first.
    """
    if source.in_transaction:
        raise RuntimeError("copy_consistent needs a source connection without an open transaction")
    source.execute("BEGIN")
    try:
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the read lock now
        details = info(source)
        with opened(destination, create=True) as target:
            # A scratch copy: no journal and no fsync (3x faster); a crash just discards it.
            target.execute("PRAGMA journal_mode = OFF")
            target.execute("PRAGMA synchronous = OFF")

            def step(_status: int, remaining: int, total: int) -> None:
                deadline.check("copying the database")
                if progress is not None:
                    progress(total - remaining, total)

            source.backup(target, pages=COPY_STEP_PAGES, progress=step, sleep=0.05)
    finally:
        source.execute("ROLLBACK")
    return details


@contextlib.contextmanager
def scratch_file(directory: Path, prefix: str, suffix: str = "", *, claim: bool = False) -> Iterator[Path]:
    """A fresh temporary path in `directory`, removed afterwards whatever happens. With `claim`, an
    flock on it is held meanwhile, so that a cleanup can tell a file in use (by any process, in any
    container on the disk) from one a killed run left (in_use). Not for a file that is renamed over
    the database: its descriptor would then be one of the database's, closed while in use."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    if claim:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if claim:
            os.close(fd)


def in_use(path: Path) -> bool:
    """Whether a scratch file made with `claim` is still held by a live run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
