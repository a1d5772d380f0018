"""The migration ledger, shared with the relayer: `_schema_migrations(name TEXT PRIMARY KEY)`.

The relayer's start-up runner skips every file whose name is in this table, so each file the job
applies is recorded under its exact file name in the same transaction. The job's own columns are
nullable additions, so the relayer's `INSERT INTO _schema_migrations (name) VALUES (?)` keeps working.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from job.errors import DatabaseProblem

TABLE = "_schema_migrations"
JOB_COLUMNS = {
    "checksum": "TEXT",
    "applied_at": "TEXT",
    "duration_ms": "INTEGER",
    "applied_by": "TEXT",
}


@dataclass(frozen=True)
class Entry:
    name: str
    checksum: str | None = None
    applied_at: str | None = None
    duration_ms: int | None = None
    applied_by: str | None = None


def _columns(conn: sqlite3.Connection) -> dict[str, int]:
    return {row[1]: row[5] for row in conn.execute(f"PRAGMA table_info({TABLE})")}


def exists(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,))
    return row.fetchone() is not None


def read(conn: sqlite3.Connection) -> dict[str, Entry]:
    """The ledger's rows by file name (empty when the table does not exist yet)."""
    if not exists(conn):
        return {}
    columns = _columns(conn)
    if columns.get("name") != 1 or sum(1 for pk in columns.values() if pk) != 1:
        raise DatabaseProblem(
            f"ledger problem: {TABLE} exists but 'name' is not its primary key "
            f"(columns: {', '.join(columns)}); the relayer could not use it either"
        )
    wanted = ["name", *(c for c in JOB_COLUMNS if c in columns)]
    rows = conn.execute(f"SELECT {', '.join(wanted)} FROM {TABLE}").fetchall()
    return {row[0]: Entry(**dict(zip(wanted, row, strict=True))) for row in rows}


def prepare(conn: sqlite3.Connection) -> None:
    """Create the ledger, or add the job's columns to the relayer's. Call inside a transaction."""
    if not exists(conn):
        cols = ", ".join(f"{name} {kind}" for name, kind in JOB_COLUMNS.items())
        conn.execute(f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, {cols})")
        return
    present = _columns(conn)
    for name, kind in JOB_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}")


def needs_preparing(conn: sqlite3.Connection) -> bool:
    return not exists(conn) or not set(JOB_COLUMNS) <= set(_columns(conn))


def record(conn: sqlite3.Connection, entry: Entry) -> None:
    conn.execute(
        f"INSERT INTO {TABLE} (name, checksum, applied_at, duration_ms, applied_by) VALUES (?, ?, ?, ?, ?)",
        (entry.name, entry.checksum, entry.applied_at, entry.duration_ms, entry.applied_by),
    )


def record_checksum(conn: sqlite3.Connection, name: str, checksum: str, *, applied_by: str) -> None:
    """Give a row the relayer wrote (name only) this job's checksum, so later edits are caught."""
    conn.execute(
        f"UPDATE {TABLE} SET checksum = ?, applied_by = ? WHERE name = ? AND checksum IS NULL",
        (checksum, applied_by, name),
    )
