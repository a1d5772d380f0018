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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job import __version__, acceptance, database, ledger, newdb, scratch, undo
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, ensure_directory, require_sqlite_version
from job.errors import (
    DatabaseProblem,
    DeadlineExceeded,
    MigrationFailed,
    VerificationFailed,
    sqlite_cause,
)
from job.lock import held
from job.log import get_logger
from job.migrations import Migration, discover, line_ending_variants
from job.replay import Replay, version_label
from job.schema import Item, Schema, describe, difference_items, group, summarise

APPLIED_BY = f"relayer-job {__version__}"
NEW_DATABASE = "create or migrate a new, empty database"
REMEDY = (
    "If a migration died half-way (the relayer's own runner is not atomic), restore the snapshot "
    "taken before it ('relayer-job snapshots list'); if the difference is known and harmless, accept "
    "it once ('relayer-job schema accept --reason TEXT', or on Render SCHEMA_ACCEPT_REASON with "
    "SCHEMA_ACCEPT_FINGERPRINT={fingerprint}); --allow-drift / ALLOW_DRIFT=1 overrides the check "
    "for one run"
)


@dataclass
class Assessment:
    """Where the database stands relative to the migration files. `problem` is set (and raised by
    `require`) when the job must not go on."""

    migrations: list[Migration]
    replay: Replay
    live: Schema
    applied: int  # the schema is that of the first `applied` files (plus any drift)
    adopt: list[Migration] = field(default_factory=list)  # in the schema; no ledger at all
    backfill: list[Migration] = field(default_factory=list)  # recorded without checksum; schema matched
    unrecorded: list[Migration] = field(default_factory=list)  # ran, but missing from the ledger
    items: dict[str, Item] = field(default_factory=dict)  # live vs. replay of `applied`
    uncovered: dict[str, Item] = field(default_factory=dict)  # the items no acceptance covers
    accepted_by: list[acceptance.Acceptance] = field(default_factory=list)  # covering the rest
    acceptances: list[acceptance.Acceptance] = field(default_factory=list)  # all recorded ones
    problem: DatabaseProblem | None = None
    overridable: bool = False  # --allow-drift may override `problem` (plain drift only)

    @property
    def pending(self) -> list[Migration]:
        return self.migrations[self.applied :]

    @property
    def schema_version(self) -> int:
        return self.migrations[self.applied - 1].number if self.applied else 0

    @property
    def expected(self) -> Schema | None:
        return self.replay.schema(self.applied)

    @property
    def drift(self) -> dict[str, list[str]]:
        return group(self.items)

    @property
    def fingerprint(self) -> str:
        """Names exactly what is wrong (uncovered items, unrecorded files), so that an acceptance
        requested ahead (SCHEMA_ACCEPT_FINGERPRINT) cannot take in a later, different difference."""
        return acceptance.fingerprint(
            {
                "uncovered": {key: acceptance.prints(item) for key, item in self.uncovered.items()},
                "unrecorded": [m.name for m in self.unrecorded],
            }
        )[:12]

    def require(self, allow_drift: bool) -> None:
        if self.problem is not None and not (allow_drift and self.overridable):
            raise self.problem


def _check_ledger_against_files(entries: dict[str, ledger.Entry], migrations: list[Migration]) -> None:
    by_name = {m.name: m for m in migrations}
    unknown = sorted(name for name in entries if name not in by_name)
    if unknown:
        raise DatabaseProblem(
            f"the database is newer than this job: it records {', '.join(unknown)}, which is not "
            "in the migrations directory; deploy a job version that has it (or check "
            "MIGRATIONS_DIR; if the relayer added a migration, copy it into migrations/)"
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
    conn: sqlite3.Connection, migrations: list[Migration], *, deadline: Deadline | None = None
) -> Assessment:
    """Compare the live database with the migrations (and the accepted differences). Ledger rows
    that name unknown files or disagree with a file's checksum raise DatabaseProblem (exit 5); every
    other problem is returned in `problem`, so that `status` can show the whole picture."""
    entries = ledger.read(conn)
    _check_ledger_against_files(entries, migrations)
    live = describe(conn)
    replay = Replay(migrations, deadline)
    accepted = acceptance.load(conn)
    names = [m.name for m in migrations]
    recorded = next((k for k in range(len(names), -1, -1) if set(names[:k]) == set(entries)), None)

    def assessment(applied: int, **facts: Any) -> Assessment:
        return Assessment(migrations, replay, live, applied, acceptances=accepted, **facts)

    backfill = [m for m in migrations[: recorded or 0] if entries[m.name].checksum is None]
    if recorded is not None and replay.schema(recorded) == live:
        return assessment(recorded, backfill=backfill)

    # Files whose changes are all in the schema but that the ledger does not record.
    floor = max((names.index(n) + 1 for n in entries), default=0)
    for k in range(floor, len(migrations) + 1):
        candidate = replay.schema(k)
        if candidate is None:
            break
        if candidate != live:
            continue
        missing = [m for m in migrations[:k] if m.name not in entries]
        if not ledger.exists(conn):
            # Never run by the relayer's runner, which creates the ledger before anything else:
            # a schema built by hand, adopted when it equals a whole prefix of the migrations.
            return assessment(k, adopt=missing)
        listed = ", ".join(m.name for m in missing)
        shown = replay.schema(recorded) if recorded is not None else None
        found = assessment(k, unrecorded=missing, items=difference_items(live, shown) if shown else {})
        found.problem = DatabaseProblem(
            f"{listed} ran but {'is' if len(missing) == 1 else 'are'} not recorded in "
            f"{ledger.TABLE}: the schema equals {version_label(migrations, k)}'s, the ledger "
            f"says {_ledger_label(migrations, recorded)} (the relayer's runner died after running "
            "the file and before recording it, or before the file's last statements); the schema "
            "cannot prove that data changes in it ran. Restore the snapshot taken before that "
            "start ('relayer-job snapshots list'), or if the file ran to its end, record it once "
            "with 'relayer-job schema accept --reason TEXT' (on Render: SCHEMA_ACCEPT_REASON with "
            f"SCHEMA_ACCEPT_FINGERPRINT={found.fingerprint})",
            unrecorded=listed,
            fingerprint=found.fingerprint,
        )
        return found

    schemas = replay.replayable()
    nearest = min(range(len(schemas)), key=lambda k: len(difference_items(live, schemas[k])))
    near = difference_items(live, schemas[nearest])
    expected = replay.schema(recorded) if recorded is not None else None
    if recorded is None or expected is None:
        why = (
            f"the ledger ({', '.join(sorted(entries))}) is not a prefix of the migrations"
            if recorded is None
            else replay.failure
        )
        found = assessment(nearest, items=near, uncovered=near)
        found.problem = DatabaseProblem(
            f"the database schema matches no known version ({why}), so the job cannot tell "
            f"which migrations were applied; nearest is {version_label(migrations, nearest)}: "
            f"{summarise(group(near))}; restore a snapshot taken before the problem "
            "('relayer-job snapshots list')",
            drift=group(near),
        )
        return found
    items = difference_items(live, expected)
    left, used = acceptance.uncovered(items, accepted)
    found = assessment(recorded, items=items, uncovered=left, accepted_by=used)
    if not left:
        found.backfill = backfill
        return found
    found.overridable = True
    found.problem = DatabaseProblem(
        f"schema drift: the ledger says {version_label(migrations, recorded)} but the live schema "
        f"differs: {summarise(group(left))}{_partly_applied(replay, recorded, left)}; nearest known "
        f"version: {version_label(migrations, nearest)}"
        + (f" (differs by: {summarise(group(near))})" if nearest != recorded else "")
        + f" (difference fingerprint {found.fingerprint}). {REMEDY.format(fingerprint=found.fingerprint)}",
        drift=group(left),
        fingerprint=found.fingerprint,
    )
    return found


def _partly_applied(replay: Replay, recorded: int, left: dict[str, Item]) -> str:
    """A hint when the differences are changes the next file makes: it probably died half-way."""
    before, after = replay.schema(recorded), replay.schema(recorded + 1)
    if before is None or after is None:
        return ""
    made_by_next = difference_items(after, before)
    shared = sorted({left[k].obj for k in left.keys() & made_by_next.keys()})
    if not shared:
        return ""
    name = replay.migrations[recorded].name
    return f"; {name} looks partly applied (its changes to {', '.join(shared)} are there)"


def _ledger_label(migrations: list[Migration], recorded: int | None) -> str:
    return version_label(migrations, recorded) if recorded is not None else "something else"


def _write_ledger(conn: sqlite3.Connection, assessment: Assessment) -> None:
    """Record what the schema proves applied: adopted files (no ledger yet) get rows, rows the
    relayer wrote without a checksum get this job's checksum, in one transaction."""
    with database.write_transaction(conn):
        ledger.prepare(conn)
        entries = ledger.read(conn)
        now = database.now_iso()
        for migration in assessment.adopt:
            if migration.name not in entries:
                ledger.record(
                    conn,
                    ledger.Entry(
                        migration.name,
                        migration.checksum,
                        now,
                        None,
                        f"{APPLIED_BY} (adopted: schema matched)",
                    ),
                )
        for migration in assessment.backfill:
            ledger.record_checksum(
                conn,
                migration.name,
                migration.checksum,
                applied_by=f"relayer (checksum recorded by {APPLIED_BY} at {now}: schema matched)",
            )


SchemaCheck = Callable[[sqlite3.Connection], None]
# A rehearsal (a scratch copy) names its events for what they mean for the real database.
EVENTS = {
    "started": "migration.started",
    "applied": "migration.applied",
    "adopted": "migration.adopted",
    "recorded": "migration.checksums_recorded",
    "accepted": "schema.drift_accepted",
}
REHEARSAL_EVENTS = {
    "started": "migration.rehearsing",
    "applied": "migration.would_apply",
    "adopted": "migration.would_adopt",
    "recorded": "migration.would_record_checksums",
    "accepted": "schema.drift_would_be_accepted",
}


def apply_one(
    conn: sqlite3.Connection, migration: Migration, deadline: Deadline, check: SchemaCheck | None = None
) -> int | None:
    """Apply one file atomically with its ledger row; its duration in ms, or None if the ledger
    (re-read inside the write transaction) shows it was applied meanwhile. `check` inspects the
    result before COMMIT and raises to roll the file back."""
    started = time.monotonic()
    conn.set_progress_handler(lambda: int(deadline.expired()), 10_000)
    # Foreign keys off for the transaction (it is a no-op inside one), so that a table rebuild's
    # DROP TABLE cannot cascade-delete child rows; foreign_key_check before COMMIT still guards.
    conn.execute("PRAGMA foreign_keys = OFF")
    mode_before = undo.journal_mode(conn)
    database.begin_immediate(conn)
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
            undo.require_transaction(conn, migration.name, statement.line)
        problems = database.foreign_key_problems(conn)
        if problems:
            raise MigrationFailed(
                f"{migration.name} leaves foreign key violations ({'; '.join(problems[:3])}); "
                "the file was rolled back",
                migration=migration.name,
            )
        if check is not None:
            check(conn)
        duration_ms = round((time.monotonic() - started) * 1000)
        ledger.record(
            conn,
            ledger.Entry(migration.name, migration.checksum, database.now_iso(), duration_ms, APPLIED_BY),
        )
        conn.execute("COMMIT")
        return duration_ms
    except BaseException as exc:
        undo.roll_back(conn, migration.name, mode_before, exc, deadline)
        raise
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.set_progress_handler(None, 0)
        conn.execute("PRAGMA foreign_keys = ON")


def uncovered_drift(
    conn: sqlite3.Connection, expected: Schema | None, assessment: Assessment
) -> dict[str, list[str]]:
    """The differences between `conn`'s schema and `expected` that no acceptance covers."""
    if expected is None:
        return {"migrations": [assessment.replay.failure or "a migration fails on an empty database"]}
    left, _ = acceptance.uncovered(difference_items(describe(conn), expected), assessment.acceptances)
    return group(left)


def _schema_check(assessment: Assessment, migration: Migration, count: int, before: Schema) -> SchemaCheck:
    """Before a file commits: the schema must be the replay's, apart from accepted differences, and
    the file must not have changed an accepted item (it was accepted as it was; a table rebuild
    could silently drop an accepted extra column's data)."""

    def check(conn: sqlite3.Connection) -> None:
        after = describe(conn)
        changed = acceptance.changed_items(before, after, assessment.acceptances)
        expected = assessment.replay.schema(count)
        left = uncovered_drift(conn, expected, assessment) if expected is not None else {}
        if changed or left:
            why = f"it changes {', '.join(changed)}, accepted as it was" if changed else summarise(left)
            raise DatabaseProblem(
                f"{migration.name} would leave the schema different from the migrations' in a way no "
                f"acceptance covers ({why}); the file was rolled back. Review it against the accepted "
                "differences ('relayer-job status'): revoke the acceptance and fix the schema, or "
                "deploy once with --allow-drift / ALLOW_DRIFT=1 and accept the new difference",
                migration=migration.name,
                drift=left,
                changed=changed,
            )

    return check


def migrate_connection(
    conn: sqlite3.Connection,
    migrations: list[Migration],
    *,
    deadline: Deadline,
    allow_drift: bool = False,
    rehearsal: bool = False,
) -> dict[str, Any]:
    """Assess, record what the schema proves, apply pending files and verify, on an open
    connection; the facts for the run's summary. A rehearsal (on a scratch copy) names its events
    for what they mean for the real database: `migration.would_apply`, not `migration.applied`."""
    log = get_logger()
    events = REHEARSAL_EVENTS if rehearsal else EVENTS
    assessment = assess(conn, migrations, deadline=deadline)
    assessment.require(allow_drift)
    if assessment.accepted_by:
        covered = {k: i for k, i in assessment.items.items() if k not in assessment.uncovered}
        log.warning(
            events["accepted"],
            acceptances=[a.label() for a in assessment.accepted_by],
            differences=group(covered),
        )
    if assessment.problem is not None:
        log.warning("schema.drift", allowed=True, differences=group(assessment.uncovered))
    if assessment.adopt or assessment.backfill or (assessment.pending and ledger.needs_preparing(conn)):
        _write_ledger(conn, assessment)
    if assessment.adopt:
        log.info(events["adopted"], names=[m.name for m in assessment.adopt])
    if assessment.backfill:
        log.info(events["recorded"], names=[m.name for m in assessment.backfill])
    if not assessment.pending:
        log.info("migration.none_pending", schema_version=assessment.schema_version)
    applied = []
    for count, migration in enumerate(assessment.pending, start=assessment.applied + 1):
        deadline.check(f"starting {migration.name}")
        log.info(events["started"], name=migration.name)
        check = None if allow_drift else _schema_check(assessment, migration, count, describe(conn))
        duration_ms = apply_one(conn, migration, deadline, check)
        if duration_ms is None:
            log.info("migration.skipped", name=migration.name, reason="applied by another runner")
            continue
        applied.append({"name": migration.name, "duration_ms": duration_ms})
        log.info(events["applied"], name=migration.name, duration_ms=duration_ms)
    drift = uncovered_drift(conn, assessment.replay.schema(len(migrations)), assessment)
    assessment.replay.close()
    if drift and not allow_drift:
        raise VerificationFailed(
            f"after migrating, the schema differs from the replayed migrations: {summarise(drift)}",
            drift=drift,
        )
    return {
        "applied": applied,
        "adopted": [m.name for m in assessment.adopt],
        "checksums_recorded": [m.name for m in assessment.backfill],
        "accepted_drift": [a.id for a in assessment.accepted_by],
        "schema_version": migrations[-1].number,
        "schema_version_before": assessment.schema_version,
        "drift": drift,
    }


def run(config: Config, *, dry_run: bool = False) -> dict[str, Any]:
    """`relayer-job migrate`: lock the disk, open (or create) the database, migrate it."""
    log = get_logger()
    require_sqlite_version()
    deadline = Deadline(config.deadline)
    migrations = discover(config.migrations_dir, deadline)
    check_location(config)
    if dry_run:
        return _dry_run(config, migrations, deadline, config.allow_drift)
    db_path = config.db_path
    if not db_path.exists():  # before any directory is created: a mistyped path stays a typo
        newdb.refuse_empty_start(config, doing=NEW_DATABASE, deadline=deadline)
    ensure_directory(db_path.parent)
    with held(config.lock_file, timeout=config.lock_timeout, command="migrate"):
        scratch.remove_leftovers(db_path.parent)
        new = newdb.refuse_empty_start(config, doing=NEW_DATABASE, deadline=deadline)
        created = not db_path.exists()
        with database.opened(db_path, create=True) as conn:
            if created:
                log.info("database.created", path=str(db_path))
            facts = migrate_connection(conn, migrations, deadline=deadline, allow_drift=config.allow_drift)
    return {"db": str(db_path), "new_database": new is not None, **facts}


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
