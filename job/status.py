"""`relayer-job status`: what the database is and where it stands, without changing anything."""

from __future__ import annotations

import sqlite3
from typing import Any

from job import catalog, database, ledger
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location
from job.errors import DatabaseProblem, JobError
from job.migrate import assess
from job.migrations import discover
from job.store import open_store


def last_snapshot(config: Config) -> dict[str, Any] | str:
    """The newest committed snapshot in the configured store, or why it could not be read."""
    try:
        store = open_store(config.store_url, config.s3, Deadline(min(config.deadline, 60)))
        newest = catalog.latest(store)
    except JobError as exc:
        return f"unavailable: {exc.message}"
    return catalog.summary(newest) if newest else f"none in {store.url}"


def report(config: Config) -> tuple[dict[str, Any], DatabaseProblem | None]:
    """The status report, and the database problem it found (if any) for the exit code."""
    migrations = discover(config.migrations_dir, Deadline(config.deadline))
    check_location(config, takes_lock=False)
    out: dict[str, Any] = {
        "db": str(config.db_path),
        "exists": config.db_path.exists(),
        "migrations_dir": str(config.migrations_dir),
        "sqlite_version": sqlite3.sqlite_version,
        "last_snapshot": last_snapshot(config),
    }
    if not out["exists"]:
        out.update(applied=[], pending=[m.name for m in migrations], schema_version=0)
        return out, None
    problem = None
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
        try:
            assessment = assess(conn, migrations)
        except DatabaseProblem as exc:
            problem = exc
            out.update(problem=exc.message, drift=exc.facts.get("drift", {}))
        else:
            out.update(
                schema_version=assessment.schema_version,
                pending=[m.name for m in assessment.pending],
                unrecorded_but_applied=[m.name for m in assessment.adopt],
                ran_but_unrecorded=[m.name for m in assessment.unrecorded],
                checksums_to_record=[m.name for m in assessment.backfill],
                drift=assessment.drift,
                drift_accepted_by=[a.id for a in assessment.accepted_by],
                acceptances=[a.summary() for a in assessment.acceptances],
            )
            assessment.replay.close()
            if assessment.problem is not None:
                problem = assessment.problem
                out.update(problem=problem.message)
    return out, problem


def render_text(status: dict[str, Any]) -> str:
    """The human-readable form of the report."""
    lines = [f"database        {status['db']}" + ("" if status["exists"] else " (does not exist)")]
    if status["exists"]:
        lines.append(
            f"size            {status.get('size_bytes', 0)} bytes, journal mode {status.get('journal_mode')}"
        )
    lines.append(f"sqlite          {status['sqlite_version']}")
    lines.append(f"schema version  {status.get('schema_version', 'unknown')}")
    for entry in status.get("applied", []):
        lines.append(f"applied         {entry['name']}  {entry['applied_at'] or ''}  {entry['applied_by']}")
    for name in status.get("unrecorded_but_applied", []):
        lines.append(f"unrecorded      {name} (schema has it; 'migrate' will record it)")
    for name in status.get("ran_but_unrecorded", []):
        lines.append(f"unrecorded      {name} (schema has it, ledger does not: see problem)")
    for name in status.get("checksums_to_record", []):
        lines.append(f"no checksum     {name} (recorded by the relayer; 'migrate' will add it)")
    for name in status.get("pending", []):
        lines.append(f"pending         {name}")
    accepted = " (accepted)" if status.get("drift_accepted_by") else ""
    for obj, items in status.get("drift", {}).items():
        lines.append(f"drift{accepted:11} {obj}: {'; '.join(items)}")
    for entry in status.get("acceptances", []):
        state = "active" if entry["active"] else f"revoked {entry['revoked_at']}"
        what = ", ".join(entry["differences"]) or f"adopted {', '.join(entry['adopted'])}"
        lines.append(
            f"acceptance      #{entry['id']} {entry['accepted_at']} {state}: {entry['reason']!r} ({what})"
        )
    if "problem" in status:
        lines.append(f"problem         {status['problem']}")
    snapshot = status.get("last_snapshot")
    if isinstance(snapshot, dict):
        snapshot = f"{snapshot['id']} ({snapshot['reason']}, schema {snapshot['schema_version']})"
    lines.append(f"last snapshot   {snapshot}")
    return "\n".join(lines)
