"""The migration runner: assess the database against the migration files, then apply what is pending.

Each pending file runs in one `BEGIN IMMEDIATE` transaction together with its ledger row and a
foreign_key_check, statement by statement through `execute()` on a connection in SQLite's own
autocommit mode (never `executescript`, which commits a pending transaction by itself on Python
3.11). Any failure rolls the file back completely; files applied before it stay applied.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job import __version__, database, ledger
from job.config import Config
from job.deadline import Deadline
from job.environment import check_database_location, ensure_directory, require_sqlite_version
from job.errors import (
    DatabaseLocked,
    DatabaseProblem,
    DeadlineExceeded,
    MigrationFailed,
    VerificationFailed,
    sqlite_cause,
)
from job.lock import held
from job.log import get_logger
from job.migrations import Migration, discover, line_ending_variants
from job.schema import Schema, describe, differences, summarise

APPLIED_BY = f"relayer-job {__version__}"


class Replay:
    """The schema after each prefix of the migrations, replayed on an empty in-memory database,
    lazily: schema(k) is the schema once the first k files are applied, None if one of them fails
    even on an empty database. Lazy, so that checking a database replays only what it needs."""

    def __init__(self, migrations: Sequence[Migration], deadline: Deadline | None = None) -> None:
        self.migrations = migrations
        self.deadline = deadline
        self.conn = database.connect(":memory:")
        self.conn.execute("PRAGMA foreign_keys = OFF")  # as the runner applies them
        if deadline is not None:
            self.conn.set_progress_handler(lambda: int(deadline.expired()), 10_000)
        self.schemas: list[Schema] = [describe(self.conn)]
        self.broken = False

    def schema(self, count: int) -> Schema | None:
        while len(self.schemas) <= count and not self.broken:
            try:
                for statement in self.migrations[len(self.schemas) - 1].statements:
                    self.conn.execute(statement.sql)
            except sqlite3.Error as exc:
                if self.deadline is not None and self.deadline.expired():
                    raise DeadlineExceeded("deadline exceeded while replaying the migrations") from exc
                self.broken = True
                break
            self.schemas.append(describe(self.conn))
        return self.schemas[count] if count < len(self.schemas) else None

    def replayable(self) -> list[Schema]:
        """Every prefix schema that replays."""
        self.schema(len(self.migrations))
        return self.schemas

    def close(self) -> None:
        self.conn.close()


def version_label(migrations: Sequence[Migration], count: int) -> str:
    return migrations[count - 1].name if count else "empty (no migration applied)"


@dataclass
class Assessment:
    """Where the database stands relative to the migration files."""

    migrations: list[Migration]
    replay: Replay
    applied: int  # the schema equals the first `applied` files
    adopt: list[Migration] = field(default_factory=list)  # applied but missing from the ledger
    drift: dict[str, list[str]] = field(default_factory=dict)

    @property
    def pending(self) -> list[Migration]:
        return self.migrations[self.applied :]

    @property
    def schema_version(self) -> int:
        return self.migrations[self.applied - 1].number if self.applied else 0


def _check_ledger_against_files(entries: dict[str, ledger.Entry], migrations: list[Migration]) -> None:
    by_name = {m.name: m for m in migrations}
    unknown = sorted(name for name in entries if name not in by_name)
    if unknown:
        raise DatabaseProblem(
            f"the database is newer than this job: it records {', '.join(unknown)}, which is not "
            "in the migrations directory; deploy a job version that has it (or check "
            "MIGRATIONS_DIR)"
        )
    for name, entry in entries.items():
        migration = by_name[name]
        if entry.checksum is None or entry.checksum == migration.checksum:
            continue
        data = migration.path.read_bytes()
        hint = (
            "only its line endings changed (keep migrations LF-only, see .gitattributes)"
            if entry.checksum in line_ending_variants(data)
            else "an applied migration must never be edited; add a new migration instead"
        )
        raise DatabaseProblem(
            f"applied migration {name} was edited: recorded checksum {entry.checksum}, file now "
            f"{migration.checksum}; {hint}"
        )


def assess(
    conn: sqlite3.Connection,
    migrations: list[Migration],
    *,
    allow_drift: bool = False,
    deadline: Deadline | None = None,
) -> Assessment:
    """Compare the live database with the migrations, or raise DatabaseProblem (exit 5)."""
    entries = ledger.read(conn)
    _check_ledger_against_files(entries, migrations)
    live = describe(conn)
    replay = Replay(migrations, deadline)
    names = [m.name for m in migrations]
    recorded = next((k for k in range(len(names), -1, -1) if set(names[:k]) == set(entries)), None)

    if recorded is not None and replay.schema(recorded) == live:
        return Assessment(migrations, replay, recorded)

    # The ledger does not describe the schema: adopt a prefix the schema provably equals.
    floor = max((names.index(n) + 1 for n in entries), default=0)
    for k in range(floor, len(migrations) + 1):
        candidate = replay.schema(k)
        if candidate is None:
            break
        if candidate == live:
            adopt = [m for m in migrations[:k] if m.name not in entries]
            return Assessment(migrations, replay, k, adopt=adopt)

    schemas = replay.replayable()
    nearest = min(range(len(schemas)), key=lambda k: sum(map(len, differences(live, schemas[k]).values())))
    recorded_schema = replay.schema(recorded) if recorded is not None else None
    if recorded is not None and recorded_schema is not None:
        drift = differences(live, recorded_schema)
        if allow_drift:
            return Assessment(migrations, replay, recorded, drift=drift)
        raise DatabaseProblem(
            f"schema drift: the ledger says {version_label(migrations, recorded)} but the live "
            f"schema differs: {summarise(drift)}; nearest known version: "
            f"{version_label(migrations, nearest)} (pass --allow-drift to migrate anyway)",
            drift=drift,
        )
    raise DatabaseProblem(
        "the database schema matches no known version, so the job cannot tell which migrations "
        f"were applied (a half-applied file?); nearest is {version_label(migrations, nearest)}: "
        f"{summarise(differences(live, schemas[nearest]))}",
        drift=differences(live, schemas[nearest]),
    )


def _locked_error(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _locked_error(exc):
            raise DatabaseLocked(
                f"the database is locked by another process ({exc}); is the relayer running? "
                "stop it, or let 'gate' run the job before it starts"
            ) from exc
        raise


def _adopt(conn: sqlite3.Connection, adopt: list[Migration]) -> None:
    _begin(conn)
    try:
        entries = ledger.read(conn)
        for migration in adopt:
            if migration.name not in entries:
                ledger.record(
                    conn,
                    ledger.Entry(
                        migration.name,
                        migration.checksum,
                        database.now_iso(),
                        None,
                        f"{APPLIED_BY} (adopted: schema already matched)",
                    ),
                )
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def apply_one(conn: sqlite3.Connection, migration: Migration, deadline: Deadline) -> int | None:
    """Apply one file atomically with its ledger row; its duration in ms, or None if the ledger
    (re-read inside the write transaction) shows it was applied meanwhile."""
    started = time.monotonic()
    conn.set_progress_handler(lambda: int(deadline.expired()), 10_000)
    # Foreign keys off for the transaction (it is a no-op inside one), so that a table rebuild's
    # DROP TABLE cannot cascade-delete child rows; foreign_key_check before COMMIT still guards.
    conn.execute("PRAGMA foreign_keys = OFF")
    _begin(conn)
    try:
        if migration.name in ledger.read(conn):
            return None
        for statement in migration.statements:
            try:
                conn.execute(statement.sql)
            except sqlite3.Error as exc:
                if deadline.expired():
                    raise DeadlineExceeded(
                        f"deadline exceeded while applying {migration.name}; it was rolled back"
                    ) from exc
                cause = sqlite_cause(exc, f"{migration.name} line {statement.line} (rolled back)")
                if cause is not None:
                    raise cause from exc
                raise MigrationFailed(
                    f"{migration.name} line {statement.line} failed: {exc}; the file was rolled "
                    "back and the database is as it was before it",
                    migration=migration.name,
                    line=statement.line,
                ) from exc
        problems = database.foreign_key_problems(conn)
        if problems:
            raise MigrationFailed(
                f"{migration.name} leaves foreign key violations ({'; '.join(problems[:3])}); "
                "the file was rolled back",
                migration=migration.name,
            )
        duration_ms = round((time.monotonic() - started) * 1000)
        ledger.record(
            conn,
            ledger.Entry(migration.name, migration.checksum, database.now_iso(), duration_ms, APPLIED_BY),
        )
        conn.execute("COMMIT")
        return duration_ms
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.set_progress_handler(None, 0)
        conn.execute("PRAGMA foreign_keys = ON")


def migrate_connection(
    conn: sqlite3.Connection,
    migrations: list[Migration],
    *,
    deadline: Deadline,
    allow_drift: bool = False,
    rehearsal: bool = False,
) -> dict[str, Any]:
    """Adopt, apply and verify on an open connection; the facts for the run's summary. A
    rehearsal (on a scratch copy) names its events for what they mean for the real database:
    `migration.would_apply`, not `migration.applied`."""
    log = get_logger()
    applied_event, adopted_event = (
        ("migration.would_apply", "migration.would_adopt")
        if rehearsal
        else ("migration.applied", "migration.adopted")
    )
    assessment = assess(conn, migrations, allow_drift=allow_drift, deadline=deadline)
    if assessment.drift:
        log.warning("schema.drift", allowed=True, differences=assessment.drift)
    if (assessment.adopt or assessment.pending) and ledger.needs_preparing(conn):
        _begin(conn)
        try:
            ledger.prepare(conn)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    if assessment.adopt:
        _adopt(conn, assessment.adopt)
        log.info(adopted_event, names=[m.name for m in assessment.adopt])
    if not assessment.pending:
        log.info("migration.none_pending", schema_version=assessment.schema_version)
    applied = []
    for migration in assessment.pending:
        deadline.check(f"starting {migration.name}")
        log.info("migration.rehearsing" if rehearsal else "migration.started", name=migration.name)
        duration_ms = apply_one(conn, migration, deadline)
        if duration_ms is None:
            log.info("migration.skipped", name=migration.name, reason="applied by another runner")
            continue
        applied.append({"name": migration.name, "duration_ms": duration_ms})
        log.info(applied_event, name=migration.name, duration_ms=duration_ms)
    expected = assessment.replay.schema(len(migrations))
    assessment.replay.close()
    drift = (
        differences(describe(conn), expected)
        if expected is not None
        else {"migrations": ["a migration fails on an empty database"]}
    )
    if drift and not allow_drift:
        raise VerificationFailed(
            f"after migrating, the schema differs from the replayed migrations: {summarise(drift)}",
            drift=drift,
        )
    return {
        "applied": applied,
        "adopted": [m.name for m in assessment.adopt],
        "schema_version": migrations[-1].number,
        "schema_version_before": assessment.schema_version,
        "drift": drift,
    }


def run(config: Config, *, dry_run: bool = False, allow_drift: bool = False) -> dict[str, Any]:
    """`relayer-job migrate`: lock the disk, open (or create) the database, migrate it."""
    log = get_logger()
    require_sqlite_version()
    migrations = discover(config.migrations_dir)
    deadline = Deadline(config.deadline)
    check_database_location(
        config.db_path, disk=config.disk_mount_path, allow_network_fs=config.allow_network_fs
    )
    if dry_run:
        return _dry_run(config, migrations, deadline, allow_drift)
    db_path = config.db_path
    ensure_directory(db_path.parent)
    with held(config.lock_file, timeout=config.lock_timeout, command="migrate"):
        created = not db_path.exists()
        with database.opened(db_path, create=True) as conn:
            if created:
                log.info("database.created", path=str(db_path))
            facts = migrate_connection(conn, migrations, deadline=deadline, allow_drift=allow_drift)
    return {"db": str(db_path), "new_database": created, **facts}


def _dry_run(
    config: Config, migrations: list[Migration], deadline: Deadline, allow_drift: bool
) -> dict[str, Any]:
    """Rehearse on a consistent copy of the live database; the live file is never written."""
    log = get_logger()
    with tempfile.TemporaryDirectory(prefix="relayer-job-dry-run-") as scratch:
        copy = Path(scratch) / "rehearsal.db"
        if config.db_path.exists():
            with database.opened(config.db_path) as live:
                database.copy_consistent(live, copy, deadline=deadline)
        else:
            log.info("database.missing", path=str(config.db_path), rehearsal="empty database")
        with database.opened(copy, create=True) as conn:
            facts = migrate_connection(
                conn, migrations, deadline=deadline, allow_drift=allow_drift, rehearsal=True
            )
    summary = {
        "would_apply": [a["name"] for a in facts["applied"]],
        "would_adopt": facts["adopted"],
        "schema_version": facts["schema_version_before"],  # the live database's: nothing changed
        "schema_version_after": facts["schema_version"],  # once the rehearsed files are applied
    }
    log.info("rehearsal.passed", **summary)
    return {"db": str(config.db_path), "dry_run": True, **summary, "drift": facts["drift"]}
