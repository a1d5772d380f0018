"""The disk lock: one writer at a time on relayer.db, across processes and containers on the disk.

flock(2) on a separate lock file next to the database: never on relayer.db or its -journal/-wal/-shm
(SQLite's own POSIX locks live there), never lockf (lost when any fd on the file is closed). The
kernel releases it when the holder dies, so a SIGKILLed job cannot leave a stale lock; the file itself
stays, and only records who holds the lock for the benefit of a waiter.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from job import stop
from job.errors import EnvironmentRefused, LockHeldByRelayer, LockTimeout, UsageError
from job.log import get_logger

POLL_SECONDS = 0.1
RECORD_START = b'{"pid"'  # how _write_holder's record begins
MAX_RECORD = 4096
RELAYER_HOLDER = "started by gate"  # + " --hold-lock" or " --supervise" in the record


@dataclass
class DiskLock:
    path: Path
    fd: int

    def share(self, holder: str) -> None:
        """Downgrade to a shared lock that the program started next inherits (gate --hold-lock
        execs it, gate --supervise passes the descriptor to its child):
        exclusive lockers then wait and are told who holds it, until that program exits."""
        _write_holder(self.fd, holder)
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        os.set_inheritable(self.fd, True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _require_lock_record(fd: int, path: Path) -> None:
    """Overwrite only a lock file: empty, or holding a holder record (possibly cut short by a
    holder killed while writing it). Anything else may be the database through a path no
    check foresaw (a hard link made later, say), and is never truncated."""
    size = os.fstat(fd).st_size
    if size == 0 or (size <= MAX_RECORD and os.pread(fd, len(RECORD_START), 0) == RECORD_START):
        return
    raise UsageError(
        f"--lock-file / JOB_LOCK_FILE: {path} holds {size} bytes that are not a lock record (the "
        "database, or another file?); it was left untouched: point the lock at a separate file"
    )


def _write_holder(fd: int, command: str) -> None:
    info = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "command": command,
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def read_holder(path: Path) -> str:
    """Who holds the lock, as recorded by the holder (best effort: it may be mid-write)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "unknown holder"
    if not info:
        return "unknown holder"
    return (
        f"pid {info.get('pid')} on {info.get('hostname')} "
        f"running '{info.get('command')}' since {info.get('since')}"
    )


def acquire(path: Path, *, timeout: float, command: str, shared: bool = False) -> DiskLock:
    """Take the lock, polling until `timeout` seconds have passed (then exit 3). Exclusive for
    anything that writes the database; shared for readers (snapshot), which may run beside each
    other and beside a relayer started by `gate --hold-lock` or `--supervise`."""
    log = get_logger()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        hint = (
            f"{path.parent} must be writable by uid {os.geteuid()}: start the container as root "
            "(the image hands the database directory to its user, then drops privileges) or chown it"
            if exc.errno in (errno.EACCES, errno.EPERM)
            else "set --lock-file / JOB_LOCK_FILE to a writable path next to the database"
        )
        raise EnvironmentRefused(f"cannot open lock file {path}: {exc.strerror}; {hint}") from exc
    started = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = read_holder(path)
            if RELAYER_HOLDER in holder:
                os.close(fd)
                raise LockHeldByRelayer(
                    f"lock {path} is held by the running relayer ({holder}) for as long as it runs; "
                    "on Render restore or migrate through a redeploy (RESTORE_SNAPSHOT, see "
                    "docs/operations.md), or stop the relayer first",
                    lock_file=str(path),
                ) from None
            waited = time.monotonic() - started
            if waited >= timeout:
                os.close(fd)
                raise LockTimeout(
                    f"lock {path} not acquired within {timeout:g}s: held by {read_holder(path)}; "
                    "wait for it to finish or raise --lock-timeout / JOB_LOCK_TIMEOUT",
                    lock_file=str(path),
                ) from None
            if not announced:
                log.info("lock.waiting", lock_file=str(path), holder=read_holder(path))
                announced = True
            if stop.requested():  # SIGTERM while waiting: give up the wait, take nothing
                os.close(fd)
                stop.check(f"waiting for the lock {path}")
            time.sleep(min(POLL_SECONDS, max(timeout - waited, 0.01)))
    if not shared:  # a shared holder would overwrite the record of the others
        try:
            _require_lock_record(fd, path)
        except UsageError:
            os.close(fd)
            raise
        _write_holder(fd, command)
    log.info(
        "lock.acquired",
        lock_file=str(path),
        mode="shared" if shared else "exclusive",
        waited_s=round(time.monotonic() - started, 3),
    )
    return DiskLock(path, fd)


@contextlib.contextmanager
def held(path: Path, *, timeout: float, command: str, shared: bool = False) -> Iterator[DiskLock]:
    lock = acquire(path, timeout=timeout, command=command, shared=shared)
    try:
        yield lock
    finally:
        lock.release()
