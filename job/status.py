"""`relayer-job status`: what the database is and where it stands, without changing anything.

The report is one dict, rendered as text or JSON by the CLI. Each part is determined on its own,
so that a missing database or an unusable store still leaves everything else in the report; the
problems found are listed in it and the most fundamental one gives the exit code.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from job import catalog, database, ledger, newdb, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location
from job.errors import DatabaseProblem, JobError, translate
from job.migrate import assess
from job.migrations import Migration, discover
from job.schema import group
from job.store import open_store

STORE_DEADLINE_S = 60
T = TypeVar("T")


def _last_snapshot(config: Config, out: dict[str, Any]) -> None:
    out["last_snapshot"] = "unavailable"
    store = open_store(config.store_url, config.s3, Deadline(min(config.deadline, STORE_DEADLINE_S)))
    newest = catalog.latest(store)
    if newest is None:
        out["last_snapshot"] = f"none in {store.url}"
        return
    age = max(0, round((datetime.now(UTC) - newest.created).total_seconds()))
    out["last_snapshot"] = {**catalog.summary(newest), "age_s": age}
    out["recovery_point_age_s"] = age  # what a lost disk would cost now, at most


def _database(config: Config, migrations: list[Migration] | None, out: dict[str, Any]) -> None:
    check_location(config, takes_lock=False)
    if not out["exists"]:
        out.update(applied=[], schema_version=0)
        if migrations is not None:
            out["pending"] = [m.name for m in migrations]
        raise DatabaseProblem(
            f"the database {config.db_path} does not exist: check --db / DATABASE_PATH, or "
            "restore a snapshot (relayer-job restore ID)"
        )
    with database.opened(config.db_path) as conn:
        details = database.info(conn)
        entries = ledger.read(conn)
        out.update(
            size_bytes=details.size,
            page_size=details.page_size,
            journal_mode=details.journal_mode,
            applied=[
                {
                    "name": e.name,
                    "checksum": e.checksum,
                    "applied_at": e.applied_at,
                    "applied_by": e.applied_by or "relayer (no checksum recorded)",
                }
                for e in sorted(entries.values(), key=lambda e: e.name)
            ],
        )
        if migrations is None:
            return
        try:
            assessment = assess(conn, migrations)
        except DatabaseProblem as exc:
            out["drift"] = exc.facts.get("drift", {})
            raise
        assessment.replay.close()
    out.update(
        schema_version=assessment.schema_version,
        pending=[m.name for m in assessment.pending],
        unrecorded_but_applied=[m.name for m in assessment.adopt],
        ran_but_unrecorded=[m.name for m in assessment.unrecorded],
        checksums_to_record=[m.name for m in assessment.backfill],
        drift=assessment.drift,
        drift_uncovered=group(assessment.uncovered),
        drift_accepted_by=[a.id for a in assessment.accepted_by],
        acceptances=[a.summary() for a in assessment.acceptances],
    )
    if assessment.problem is not None:
        out["difference_fingerprint"] = assessment.fingerprint
        raise assessment.problem


def _health(config: Config, out: dict[str, Any]) -> None:
    """What deploy checks before it snapshots: not an empty database standing in for data the store
    holds (the empty-database rule), quick_check and foreign_key_check."""
    if not out["exists"]:
        return
    out["health"] = "unknown"
    newdb.refuse_empty_start(
        config, doing="start the relayer on it (deploy, gate and snapshot refuse it)", deadline=Deadline(60)
    )
    with database.opened(config.db_path) as conn:
        database.require_healthy(conn, f"database {config.db_path}")
    out["health"] = "ok"


def _space(config: Config, out: dict[str, Any]) -> None:
    """Room for the next snapshot's private copy beside the database (snapshot.create's need)."""
    if not out["exists"]:
        return
    out["free_bytes"] = shutil.disk_usage(config.db_path.parent).free
    snapshot.require_room(config.db_path)


def _attempt(step: Callable[[], T], problems: list[JobError]) -> T | None:
    """Run one part of the report; a failure the job understands becomes a listed problem."""
    try:
        return step()
    except JobError as exc:
        problems.append(exc)
    except Exception as exc:
        known = translate(exc)
        if known is None:
            raise
        problems.append(known)
    return None


def report(config: Config) -> tuple[dict[str, Any], JobError | None]:
    """The status report, and the problem that decides the exit code (None: all is well). With
    several, the lowest exit code wins: configuration (2) before environment (4), database (5)
    and store (6), because fixing it may fix the others."""
    out: dict[str, Any] = {
        "db": str(config.db_path),
        "exists": config.db_path.exists(),
        "migrations_dir": str(config.migrations_dir),
        "sqlite_version": sqlite3.sqlite_version,
    }
    problems: list[JobError] = []
    migrations = _attempt(lambda: discover(config.migrations_dir, Deadline(config.deadline)), problems)
    _attempt(lambda: _database(config, migrations, out), problems)
    _attempt(lambda: _health(config, out), problems)
    _attempt(lambda: _space(config, out), problems)
    _attempt(lambda: _last_snapshot(config, out), problems)
    worst = min(problems, key=lambda p: p.exit_code, default=None)
    out["problems"] = [
        {"error_code": p.error_code, "exit_code": p.exit_code, "error": p.message} for p in problems
    ]
    out["exit_code"] = worst.exit_code if worst else 0
    return out, worst


def _columns(rows: list[list[str]]) -> str:
    """Rows of cells, each column as wide as its widest cell; a row's last cell is not padded
    (it may be long), so that labels and the columns after them line up whatever the lengths."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return "\n".join(
        "  ".join([cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]) for row in rows
    )


def _age(seconds: int) -> str:
    """12s, 14m, 3h05m, 2d04h: the recovery point at a glance."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def render_text(status: dict[str, Any]) -> str:
    """The human-readable form of the report."""
    rows = [["database", status["db"] + ("" if status["exists"] else " (does not exist)")]]
    if "size_bytes" in status:
        rows.append(
            ["size", f"{status.get('size_bytes', 0)} bytes, journal mode {status.get('journal_mode')}"]
        )
    rows.append(["sqlite", status["sqlite_version"]])
    if "health" in status:
        rows.append(["health", status["health"], "(quick_check, foreign_key_check)"])
    rows.append(["schema version", str(status.get("schema_version", "unknown"))])
    for entry in status.get("applied", []):
        rows.append(["applied", entry["name"], entry["applied_at"] or "", entry["applied_by"]])
    for name in status.get("unrecorded_but_applied", []):
        rows.append(["unrecorded", name, "(schema has it; 'migrate' will record it)"])
    for name in status.get("ran_but_unrecorded", []):
        rows.append(["unrecorded", name, "(schema has it, the ledger does not: see the problem)"])
    for name in status.get("checksums_to_record", []):
        rows.append(["no checksum", name, "(recorded by the relayer; 'migrate' or 'deploy' adds it)"])
    for name in status.get("pending", []):
        rows.append(["pending", name])
    uncovered = (
        status.get("drift_uncovered", {}) if status.get("drift_accepted_by") else status.get("drift", {})
    )
    for obj, items in status.get("drift", {}).items():
        rows.append(["drift" if obj in uncovered else "drift (accepted)", f"{obj}: {'; '.join(items)}"])
    if "difference_fingerprint" in status:
        rows.append(["fingerprint", status["difference_fingerprint"], "(SCHEMA_ACCEPT_FINGERPRINT)"])
    for entry in status.get("acceptances", []):
        state = "active" if entry["active"] else f"revoked {entry['revoked_at']}"
        what = ", ".join(entry["differences"]) or f"adopted {', '.join(entry['adopted'])}"
        rows.append(
            [f"acceptance #{entry['id']}", entry["accepted_at"], state, f"{entry['reason']!r} ({what})"]
        )
    snapshot = status.get("last_snapshot")
    if isinstance(snapshot, dict):
        snapshot = (
            f"{snapshot['id']} ({snapshot['reason']}, schema {snapshot['schema_version']}), "
            f"taken {_age(snapshot['age_s'])} ago"
        )
    rows.append(["last snapshot", str(snapshot)])
    for problem in status.get("problems", []):
        rows.append(["problem", f"exit {problem['exit_code']}: {problem['error']}"])
    return _columns(rows)
