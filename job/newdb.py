"""The one rule for starting from nothing: never create or adopt an empty database while the store
holds restorable snapshots, unless ALLOW_NEW_DATABASE=1.

A missing database, a zero-byte file or one holding no tables, while the store holds snapshots,
is a mistyped DATABASE_PATH, an unmounted or replaced disk, or lost data, not a first deploy.
Treated as data, it would be migrated, snapshotted and become the newest snapshot. Every command
that may create a database or adopt an empty one asks here first (deploy and gate, migrate,
snapshot); restore replaces such a file without needing --force.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from job import catalog, database
from job.config import Config
from job.deadline import Deadline
from job.errors import DatabaseProblem, JobError
from job.store import Store, open_store

USER_TABLES = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
)


def blank(db_path: Path) -> str | None:
    """Why the database holds no data ('does not exist', 'is an empty file', 'holds no tables'),
    or None when it holds tables or cannot be read as a database (the health check says why)."""
    if not db_path.exists():
        return "does not exist"
    try:
        with database.opened(db_path) as conn:
            tables = int(conn.execute(USER_TABLES).fetchone()[0])
    except (JobError, sqlite3.Error):
        return None
    if tables:
        return None
    return "is an empty file (0 bytes)" if db_path.stat().st_size == 0 else "holds no tables"


def refuse_empty_start(
    config: Config, *, doing: str, deadline: Deadline, store: Store | None = None
) -> str | None:
    """Why the database counts as new (see `blank`), or None when it holds data; DatabaseProblem
    (exit 5, naming the snapshot to restore) when it is new while the store holds restorable
    snapshots and ALLOW_NEW_DATABASE is not set. The store is opened only when that must be known."""
    why = blank(config.db_path)
    if why is None or config.allow_new_database:
        return why
    store = store or open_store(config.store_url, config.s3, deadline)
    newest = suggested = None
    for manifest in catalog.restorable(store):
        newest = newest or manifest
        if manifest.reason != catalog.PRE_RESTORE:  # what 'latest' would restore
            suggested = manifest
            break
    if newest is None:
        return why
    pick = suggested or newest
    raise DatabaseProblem(
        f"database {config.db_path} {why}, but {store.url} holds snapshots ('latest' is "
        f"{pick.id}, schema {pick.schema_version}, {pick.reason}, {pick.created_at}); refusing to "
        f"{doing}. To bring the data back set RESTORE_SNAPSHOT={pick.id} (or run 'relayer-job "
        f"restore {pick.id}'); to really start empty set ALLOW_NEW_DATABASE=1; else check "
        "DATABASE_PATH"
    )
