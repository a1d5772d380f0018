"""The job's exceptions. Each carries the documented exit code; the CLI maps them in one place.

Exit codes (stable; documented in README.md):
0 success · 1 unexpected internal error · 2 usage or configuration error · 3 lock not acquired ·
4 environment refused · 5 database problem · 6 object store failure · 7 migration failed and rolled
back · 8 verification failed · 9 deadline exceeded · 128+N stopped by signal N (143 SIGTERM, 130 SIGINT).
"""

from __future__ import annotations

import errno
import sqlite3
from typing import ClassVar


class JobError(Exception):
    """Base class: a failure the job understands and can explain in one line."""

    exit_code: int = 1
    error_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts


class UsageError(JobError):
    exit_code = 2
    error_code = "usage_error"


class LockNotAcquired(JobError):
    """Exit 3; the error_code says why, so that the on-call reader knows whether waiting helps."""

    exit_code = 3
    error_code = "lock_not_acquired"


class LockTimeout(LockNotAcquired):
    error_code = "lock_timeout"  # waited the whole lock timeout


class LockHeldByRelayer(LockNotAcquired):
    error_code = "lock_held_by_relayer"  # refused at once: held for as long as the relayer runs


class DatabaseLocked(LockNotAcquired):
    error_code = "database_locked"  # SQLite's own lock (busy/locked): another process writes


class DatabaseInUse(LockNotAcquired):
    error_code = "database_in_use"  # another process has the database open, without the disk lock


class EnvironmentRefused(JobError):
    exit_code = 4
    error_code = "environment_refused"


class DatabaseProblem(JobError):
    exit_code = 5
    error_code = "database_problem"


class StoreError(JobError):
    exit_code = 6
    error_code = "store_error"


class MigrationFailed(JobError):
    exit_code = 7
    error_code = "migration_failed"


class VerificationFailed(JobError):
    exit_code = 8
    error_code = "verification_failed"


class DeadlineExceeded(JobError):
    exit_code = 9
    error_code = "deadline_exceeded"


class Stopped(JobError):
    """SIGTERM/SIGINT: the run stopped at a safe point. The exit code is the shell's 128+N, so a
    supervisor sees the same code as for a process the signal killed."""

    error_code = "stopped_by_signal"

    def __init__(self, message: str, signum: int, **facts: object) -> None:
        super().__init__(message, **facts)
        self.exit_code = 128 + signum


_ENVIRONMENT_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
}


_SQLITE_ENVIRONMENT = ("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")


def sqlite_cause(exc: sqlite3.Error, doing: str) -> JobError | None:
    """The documented error for SQLite failures caused by the disk or the deadline, not the SQL."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith(_SQLITE_ENVIRONMENT):
        return EnvironmentRefused(
            f"{doing}: {exc} ({name}): check the disk's free space, owner and mount options"
        )
    if name == "SQLITE_INTERRUPT":
        return DeadlineExceeded(f"{doing}: interrupted by the deadline; raise --deadline / JOB_DEADLINE")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or (not name and "is locked" in str(exc)):
        return DatabaseLocked(
            f"{doing}: the database is locked by another process ({exc}); is the relayer running?"
        )
    return None


def translate(exc: BaseException) -> JobError | None:
    """A documented error for failures that come from the environment rather than from a bug:
    the disk (permissions, space, read-only) is exit 4, a locked or damaged database exit 3 or 5."""
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f" on {exc.filename}" if exc.filename else ""
        return EnvironmentRefused(
            f"{_ENVIRONMENT_ERRNOS[exc.errno]}{where}: the job needs to write next to the database "
            "(check the disk's owner, free space and mount options)"
        )
    if isinstance(exc, sqlite3.Error):
        return sqlite_cause(exc, "SQLite") or DatabaseProblem(f"SQLite error: {exc}")
    return None


def classify(exc: Exception) -> JobError:
    """Any exception as the job's error it amounts to (a bug is exit 1, `internal_error`), for
    paths that log a failure and go on instead of exiting: the supervisor's snapshots."""
    if isinstance(exc, JobError):
        return exc
    return translate(exc) or JobError(f"{type(exc).__name__}: {exc}")
