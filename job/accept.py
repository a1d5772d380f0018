"""`relayer-job schema accept`: accept the live schema's current difference from the migrations once,
audited, instead of overriding the drift check on every deploy.

On the disk, under the lock, after a snapshot (the way back). Two situations:
- the schema differs from the replay of the recorded migrations (drift): the differences are
  recorded with fingerprints of each object (job.acceptance) and covered from then on;
- the schema equals the replay of more files than the ledger records (the relayer's runner died
  after running a file, before recording it): the operator vouches that the file ran to its end,
  and the files are recorded in the ledger ("adopted by operator").
"""

from __future__ import annotations

import sqlite3
from typing import Any

from job import acceptance, database, ledger, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, require_sqlite_version
from job.errors import DatabaseProblem, UsageError
from job.lock import held
from job.log import get_logger
from job.migrate import APPLIED_BY, Assessment, assess
from job.migrations import Migration, discover
from job.replay import version_label
from job.store import open_store


def _record(conn: sqlite3.Connection, assessment: Assessment, *, reason: str) -> dict[str, Any]:
    """Write the acceptance (and any adopted ledger rows) in one transaction; the facts."""
    now = database.now_iso()
    adopted = [m.name for m in assessment.unrecorded]
    expected = assessment.expected or {}
    with database.write_transaction(conn):
        if adopted:
            ledger.prepare(conn)
            for migration in assessment.unrecorded:
                ledger.record(
                    conn,
                    ledger.Entry(
                        migration.name,
                        migration.checksum,
                        now,
                        None,
                        f"{APPLIED_BY} (adopted by operator: {reason})",
                    ),
                )
        acceptance_id = acceptance.record(
            conn,
            accepted_at=now,
            reason=reason,
            accepted_by=APPLIED_BY,
            ledger_version=version_label(assessment.migrations, assessment.applied),
            drift={} if adopted else assessment.drift,
            live=assessment.live,
            expected=expected,
            adopted=adopted,
            deploy=snapshot.deploy_context(),
        )
    accepted = {} if adopted else assessment.drift
    return {"acceptance_id": acceptance_id, "adopted": adopted, "accepted": accepted}


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
        raise DatabaseProblem(f"database {db_path} does not exist: there is nothing to accept (check --db)")
    with held(config.lock_file, timeout=config.lock_timeout, command="schema accept", shared=True):
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


def accept(
    conn: sqlite3.Connection, migrations: list[Migration], reason: str, deadline: Deadline
) -> dict[str, Any]:
    """Accept the current state of `conn` (see the module docstring); the facts."""
    assessment = assess(conn, migrations, deadline=deadline)
    try:
        return _accept(conn, assessment, reason)
    finally:
        assessment.replay.close()


def requested_once(
    conn: sqlite3.Connection, migrations: list[Migration], reason: str, deadline: Deadline
) -> dict[str, Any] | None:
    """The start-path form (SCHEMA_ACCEPT_REASON, used by deploy, gate and preflight): accept once
    per reason. A reason already recorded is not applied again, so leaving the variable set can
    never accept a later, different difference."""
    if any(a.reason == reason for a in acceptance.load(conn)):
        get_logger().info("schema.accept_already_done", reason=reason)
        return None
    return accept(conn, migrations, reason, deadline)


def _accept(conn: sqlite3.Connection, assessment: Assessment, reason: str) -> dict[str, Any]:
    log = get_logger()
    if assessment.problem is not None and not (assessment.unrecorded or assessment.overridable):
        raise DatabaseProblem(
            f"cannot accept this state: {assessment.problem.message}", drift=assessment.drift
        )
    if assessment.problem is None:
        covered = [a.label() for a in assessment.accepted_by]
        log.info(
            "schema.nothing_to_accept", schema_version=assessment.schema_version, already_accepted_by=covered
        )
        return {"acceptance_id": None, "already_accepted_by": covered}
    facts = _record(conn, assessment, reason=reason)
    log.warning(
        "schema.accepted",
        id=facts["acceptance_id"],
        reason=reason,
        differences=facts["accepted"],
        adopted=facts["adopted"],
    )
    return facts


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
