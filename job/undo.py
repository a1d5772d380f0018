"""Proving that a failed migration file was really undone, before saying "the database is as it was".

SQLite's ROLLBACK restores the database only if the file left the runner's transaction and its
journal alone. A file that ended the transaction (COMMIT, END, ROLLBACK) or switched the journal
off cannot be undone, whatever the lint let through; the runner then refuses (exit 5) and names
the way back, a snapshot, instead of reporting a clean rollback.
"""

from __future__ import annotations

import sqlite3
import time

from job import database
from job.deadline import Deadline
from job.errors import DatabaseProblem, JobError
from job.log import get_logger

GRACE_SECONDS = 5.0  # quick_check after a rollback may outlive the deadline by this much


class RollbackUnverified(DatabaseProblem):
    """A migration file failed and its rollback cannot be proven: the database may be damaged."""

    def __init__(self, problem: str, **facts: object) -> None:
        self.problem = problem
        super().__init__(self._text(None), **facts)

    def _text(self, snapshot_id: str | None) -> str:
        if snapshot_id:
            return (
                f"{self.problem}; do not start the relayer on this database: restore snapshot "
                f"{snapshot_id} (RESTORE_SNAPSHOT={snapshot_id}), then fix the migration"
            )
        # Also raised by rehearsals (preflight, --dry-run), where the live database is untouched.
        return (
            f"{self.problem}; fix the migration, and if this ran on the live database, do not start "
            "the relayer on it: restore the newest snapshot taken before this run "
            "('relayer-job snapshots list')"
        )

    def name_way_back(self, snapshot_id: str | None) -> None:
        """Name the snapshot taken before migrating, once the caller knows it."""
        self.message = self._text(snapshot_id)
        self.args = (self.message,)
        self.facts["snapshot_id"] = snapshot_id


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def require_transaction(conn: sqlite3.Connection, name: str, line: int) -> None:
    """After each statement of a file: the runner's transaction must still be open."""
    if not conn.in_transaction:
        raise RollbackUnverified(
            f"{name} line {line} ended the migration's transaction itself (COMMIT, END or ROLLBACK): "
            "what ran before it may be committed and cannot be undone",
            migration=name,
            line=line,
        )


def roll_back(
    conn: sqlite3.Connection, name: str, mode_before: str, error: BaseException, deadline: Deadline
) -> None:
    """Roll back a failed file and check that SQLite could undo it: ROLLBACK succeeded, no
    transaction is left, the journal mode is the one from before the file, and quick_check
    passes. RollbackUnverified (exit 5) if not; the caller then re-raises `error` as it was."""
    conn.set_progress_handler(None, 0)
    problems = []
    try:
        if conn.in_transaction:  # else SQLite already rolled it back (SQLITE_FULL, IOERR...)
            conn.execute("ROLLBACK")
        if conn.in_transaction:
            problems.append("a transaction is still open after ROLLBACK")
        mode = journal_mode(conn)
    except sqlite3.Error as exc:
        problems.append(f"ROLLBACK failed: {exc}")
    else:
        if mode != mode_before:
            problems.append(
                f"the file changed the journal mode from {mode_before} to {mode}, so ROLLBACK could "
                "not restore what it had written"
            )
        problems += _quick_check(conn, name, deadline)
    if problems:
        raise RollbackUnverified(
            f"{name} failed ({_failure(error)}) and its rollback cannot be trusted: "
            f"{'; '.join(problems[:3])}",
            migration=name,
        ) from error


def _failure(error: BaseException) -> str:
    """What went wrong first, without the claim of a clean rollback that MigrationFailed makes."""
    line = error.facts.get("line") if isinstance(error, JobError) else None
    where = f"line {line}: " if line else ""
    if isinstance(error.__cause__, sqlite3.Error):
        return f"{where}{error.__cause__}"
    return str(error) or type(error).__name__


def _quick_check(conn: sqlite3.Connection, name: str, deadline: Deadline) -> list[str]:
    """quick_check, within the deadline plus a grace. Cut off, it proves nothing either way: the
    checks above already showed SQLite's undo was intact, so that is a warning, not a failure."""
    stop = time.monotonic() + max(deadline.remaining(), 0) + GRACE_SECONDS
    conn.set_progress_handler(lambda: int(time.monotonic() > stop), 10_000)
    try:
        problems = database.quick_check(conn)
    finally:
        conn.set_progress_handler(None, 0)
    if problems and time.monotonic() > stop:
        get_logger().warning("migration.rollback_unchecked", name=name, reason="quick_check out of time")
        return []
    lines = [line for p in problems for line in p.splitlines() if not line.startswith("***")]
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return [f"quick_check: {'; '.join(lines[:2])}{more}"] if problems else []
