"""`relayer-job schema accept`: accept the live schema's current difference from the migrations once,
audited, instead of overriding the drift check on every deploy.

On the disk, under the lock, after a snapshot (the way back). Two situations:
- the schema differs from the replay of the recorded migrations (drift): the differing items are
  recorded with fingerprints (job.acceptance) and covered from then on;
- the schema equals the replay of more files than the ledger records (the relayer's runner died
  after running a file, before recording it): the operator vouches that the file ran to its end,
  and the files are recorded in the ledger ("adopted by operator").
Before anything is recorded, the acceptance is rehearsed on a scratch copy together with the
pending migrations: an acceptance that would not get the next deploy through, or that leaves the
relayer without something its migrations create, is refused, and nothing is written.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from job import acceptance, database, ledger, scratch, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, require_sqlite_version
from job.errors import DatabaseProblem, JobError, UsageError
from job.lock import held
from job.log import get_logger
from job.migrate import APPLIED_BY, Assessment, assess, migrate_connection
from job.migrations import Migration, discover
from job.replay import version_label
from job.schema import describe, difference_items, group, summarise
from job.store import open_store


def _record(conn: sqlite3.Connection, assessment: Assessment, reason: str) -> int:
    """Write the acceptance (and any adopted ledger rows) in one transaction; its id."""
    now = database.now_iso()
    with database.write_transaction(conn):
        if assessment.unrecorded:
            ledger.prepare(conn)
            for migration in assessment.unrecorded:
                entry = ledger.Entry(
                    migration.name,
                    migration.checksum,
                    now,
                    None,
                    f"{APPLIED_BY} (adopted by operator: {reason})",
                )
                ledger.record(conn, entry)
        return acceptance.record(
            conn,
            accepted_at=now,
            reason=reason,
            accepted_by=APPLIED_BY,
            ledger_version=version_label(assessment.migrations, assessment.applied),
            items={} if assessment.unrecorded else assessment.uncovered,
            live=assessment.live,
            adopted=[m.name for m in assessment.unrecorded],
            deploy=snapshot.deploy_context(),
        )


def _rehearse(conn: sqlite3.Connection, assessment: Assessment, reason: str, deadline: Deadline) -> None:
    """Accept on a scratch copy, apply the pending migrations there, and require that the result
    lacks nothing the migrations create; DatabaseProblem (exit 5) naming why otherwise."""
    migrations = assessment.migrations
    with tempfile.TemporaryDirectory(prefix="relayer-job-accept-") as scratch:
        copy = Path(scratch) / "rehearsal.db"
        database.copy_consistent(conn, copy, deadline=deadline)
        try:
            with database.opened(copy) as rehearsal:
                _record(rehearsal, assess(rehearsal, migrations, deadline=deadline), reason)
                migrate_connection(rehearsal, migrations, deadline=deadline, rehearsal=True)
                final = describe(rehearsal)
        except JobError as exc:
            raise DatabaseProblem(
                f"accepting this would not get the next deploy through: {exc.message}; nothing was "
                "recorded. Restore a snapshot taken before the problem, or repair the schema by hand "
                "(e.g. run the rest of a half-applied file), then accept what remains"
            ) from exc
    expected = assessment.replay.schema(len(migrations)) or {}
    missing = {k: i for k, i in difference_items(final, expected).items() if i.live is None}
    if missing:
        raise DatabaseProblem(
            f"refusing to accept a schema that lacks what the migrations create and the relayer "
            f"uses: {summarise(group(missing))}; nothing was recorded. Restore a snapshot, or "
            "re-create what is missing, then accept what remains"
        )


def accept(
    conn: sqlite3.Connection,
    migrations: list[Migration],
    reason: str,
    deadline: Deadline,
    *,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Accept the current state of `conn` (see the module docstring); the facts. With
    `fingerprint`, only the very difference that fingerprint names."""
    log = get_logger()
    assessment = assess(conn, migrations, deadline=deadline)
    try:
        if assessment.problem is None:
            covered = [a.label() for a in assessment.accepted_by]
            log.info(
                "schema.nothing_to_accept",
                schema_version=assessment.schema_version,
                already_accepted_by=covered,
            )
            return {"acceptance_id": None, "already_accepted_by": covered}
        if not (assessment.unrecorded or assessment.overridable):
            raise DatabaseProblem(
                f"cannot accept this state: {assessment.problem.message}", drift=assessment.drift
            )
        if fingerprint is not None and fingerprint != assessment.fingerprint:
            raise DatabaseProblem(
                f"SCHEMA_ACCEPT_FINGERPRINT={fingerprint} does not name the current difference "
                f"(fingerprint {assessment.fingerprint}: {assessment.problem.message}); nothing was "
                "accepted: check what changed, then set the fingerprint this message shows",
                drift=group(assessment.uncovered),
            )
        _rehearse(conn, assessment, reason, deadline)
        acceptance_id = _record(conn, assessment, reason)
    finally:
        assessment.replay.close()
    facts = {
        "acceptance_id": acceptance_id,
        "adopted": [m.name for m in assessment.unrecorded],
        "accepted": {} if assessment.unrecorded else group(assessment.uncovered),
        "fingerprint": assessment.fingerprint,
    }
    log.warning("schema.accepted", id=acceptance_id, reason=reason, **facts)
    return facts


def requested_once(
    conn: sqlite3.Connection, migrations: list[Migration], config: Config, deadline: Deadline
) -> dict[str, Any] | None:
    """The start-path form (SCHEMA_ACCEPT_REASON with SCHEMA_ACCEPT_FINGERPRINT, used by deploy,
    gate and preflight): accept only the difference the fingerprint names, so that leaving the
    variables set can never accept a later, different difference."""
    if not config.schema_accept_reason:
        return None
    return accept(
        conn, migrations, config.schema_accept_reason, deadline, fingerprint=config.schema_accept_fingerprint
    )


def run(config: Config, *, reason: str | None, revoke: int | None) -> dict[str, Any]:
    """`schema accept` at a shell on the disk. The lock is taken shared, like `snapshot`: the job's own
    writers (migrate, deploy, restore) wait, while a relayer started by `gate --hold-lock` keeps
    running (it reads the ledger only when it starts and never touches the acceptance table), so an
    operator can accept over `render ssh`. A snapshot is taken before, and one after so that the next
    `preflight` rehearses with the acceptance."""
    if revoke is None and not (reason or "").strip():
        raise UsageError("schema accept: --reason TEXT is required: say why this difference is accepted")
    require_sqlite_version()
    deadline = Deadline(config.deadline)
    migrations = discover(config.migrations_dir, deadline)
    db_path = config.db_path
    check_location(config)
    store = open_store(config.store_url, config.s3, deadline)
    if not db_path.exists():
        raise DatabaseProblem(
            f"database {db_path} does not exist: there is nothing to accept (check --db / "
            "DATABASE_PATH / DATABASE_URL)"
        )
    with held(config.lock_file, timeout=config.lock_timeout, command="schema accept", shared=True):
        scratch.remove_leftovers(db_path.parent)
        with database.opened(db_path) as conn:
            database.require_healthy(conn, f"database {db_path}")
            if revoke is not None:
                _require_active(conn, revoke)
        before = snapshot.create(
            db_path, store, reason="pre-revoke" if revoke is not None else "pre-accept", deadline=deadline
        )
        with database.opened(db_path) as conn:
            if revoke is not None:
                facts = _revoke(conn, revoke, reason)
            else:
                facts = accept(conn, migrations, str(reason).strip(), deadline)
        if facts.get("acceptance_id") or facts.get("revoked"):
            snapshot.create(db_path, store, reason="post-accept", deadline=deadline)
    return {**facts, "snapshot_id": before["snapshot_id"]}


def _require_active(conn: sqlite3.Connection, acceptance_id: int) -> None:
    active = [a.id for a in acceptance.load(conn) if a.active]
    if acceptance_id not in active:
        raise UsageError(
            f"--revoke {acceptance_id}: no active acceptance with that id "
            f"(active: {', '.join(map(str, active)) or 'none'}; see 'relayer-job status')"
        )


def _revoke(conn: sqlite3.Connection, acceptance_id: int, reason: str | None) -> dict[str, Any]:
    by = APPLIED_BY + (f": {reason.strip()}" if reason and reason.strip() else "")
    with database.write_transaction(conn):
        acceptance.revoke(conn, acceptance_id, revoked_at=database.now_iso(), revoked_by=by)
    get_logger().warning(
        "schema.acceptance_revoked",
        id=acceptance_id,
        note="the difference it covered is drift again (exit 5) wherever it still exists",
    )
    return {"revoked": acceptance_id}
