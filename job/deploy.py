"""`relayer-job deploy`: the start-path job on the disk, before the relayer starts.

Checks the environment (refusing loudly when the disk is not there, as in Render's pre-deploy
command), takes the disk lock, checks and snapshots the live database (the way back), applies the
pending migrations and verifies the result. Re-running it after a success only verifies.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from job import accept, database, ledger, newdb, restore, retain, scratch, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import check_location, ensure_directory, require_sqlite_version
from job.errors import JobError, UsageError, VerificationFailed
from job.lock import RELAYER_HOLDER, DiskLock, acquire
from job.log import get_logger
from job.migrate import assess, migrate_connection
from job.migrations import Migration, discover
from job.store import Store, open_store
from job.undo import RollbackUnverified

START_EMPTY = "start the relayer on a new, empty database"


@contextlib.contextmanager
def step(name: str, durations: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    yield
    durations[name] = round(time.monotonic() - started, 3)
    get_logger().info("deploy.step_finished", step=name, duration_s=durations[name])


def run(config: Config, *, keep_lock: bool = False) -> tuple[dict[str, Any], DiskLock | None]:
    """Run the deploy sequence; the facts for the summary, and the still-held lock if `keep_lock`."""
    log = get_logger()
    deadline = Deadline(config.deadline)
    durations: dict[str, float] = {}
    db_path = config.db_path
    with step("checks", durations):
        require_sqlite_version()
        check_location(config)
        migrations = discover(config.migrations_dir, deadline)
        store = open_store(config.store_url, config.s3, deadline)
        if not config.restore_snapshot and not db_path.exists():  # before any directory is created
            newdb.refuse_empty_start(config, doing=START_EMPTY, deadline=deadline, store=store)
    with step("lock", durations):
        ensure_directory(db_path.parent)
        lock = acquire(config.lock_file, timeout=config.lock_timeout, command="deploy")
    try:
        facts = _under_lock(config, store, migrations, deadline, durations)
    except BaseException:
        lock.release()
        raise
    pre_migrate = {"snapshot_id": facts["snapshot_id"], "unchanged": facts["snapshot_unchanged"]}
    committed = retain.is_new(pre_migrate) or bool(facts["post_migrate_snapshot_id"] or facts["restored"])
    facts.update(retain.after_snapshot(config, store, committed=committed))
    log.info("deploy.ready", schema_version=facts["schema_version"])
    if keep_lock:
        return {**facts, "durations_s": durations}, lock
    lock.release()
    return {**facts, "durations_s": durations}, None


def _under_lock(
    config: Config,
    store: Store,
    migrations: list[Migration],
    deadline: Deadline,
    durations: dict[str, float],
) -> dict[str, Any]:
    log = get_logger()
    db_path = config.db_path
    scratch.remove_leftovers(db_path.parent)
    restored = None
    if config.restore_snapshot:
        with step("restore", durations):
            restored = restore.requested_once(config, store, deadline)
    new = newdb.refuse_empty_start(config, doing=START_EMPTY, deadline=deadline, store=store)
    existed = new is None  # holds data: a missing or empty database is a new one
    snapshot_facts: dict[str, Any] = {"snapshot_id": None}
    accepted = None
    if existed:
        with step("proof", durations):
            proven = snapshot.healthy_and_unchanged(db_path, store)
            writes = config.schema_accept_reason is not None or _will_write(db_path, migrations, deadline)
        if proven is not None and not writes:
            log.info(
                "database.unchanged", since=proven.id, checks="quick_check and foreign_key_check passed then"
            )
            snapshot_facts = {"snapshot_id": proven.id, "unchanged": True}
        else:
            if proven is None:
                with step("health", durations), database.opened(db_path) as conn:
                    database.require_healthy(conn, f"database {db_path}")
            with step("snapshot", durations):
                snapshot_facts = snapshot.create(
                    db_path, store, reason="pre-migrate", deadline=deadline, way_back=writes
                )
        if config.schema_accept_reason:
            with step("schema_accept", durations), database.opened(db_path) as conn:
                accepted = accept.requested_once(conn, migrations, config, deadline)
    else:
        log.warning(
            "database.missing" if not db_path.exists() else "database.empty",
            path=str(db_path),
            why=new,
            note="a new database will be created and migrated",
        )
    try:
        with step("migrate", durations), database.opened(db_path, create=True) as conn:
            migrated = migrate_connection(conn, migrations, deadline=deadline, allow_drift=config.allow_drift)
    except JobError as exc:
        exc.facts.setdefault("snapshot_id", snapshot_facts.get("snapshot_id"))
        if isinstance(exc, RollbackUnverified):
            exc.name_way_back(snapshot_facts.get("snapshot_id"))
        raise
    wrote = bool(migrated["applied"] or migrated["adopted"] or migrated["checksums_recorded"] or accepted)
    with step("verify", durations), database.opened(db_path) as conn:
        # Nothing written since the health check (or the proof): only the ledger needs a look.
        problems = (
            database.quick_check(conn) + database.foreign_key_problems(conn) if wrote or not existed else []
        )
        missing = [m.name for m in migrations if m.name not in ledger.read(conn)]
        if missing:
            problems.append(
                f"{', '.join(missing)} not recorded in {ledger.TABLE} (the relayer would re-run them)"
            )
        if problems:
            raise VerificationFailed(
                f"database {db_path} failed its checks after migrating: {'; '.join(problems[:3])}; "
                f"the way back is snapshot {snapshot_facts.get('snapshot_id')}",
                snapshot_id=snapshot_facts.get("snapshot_id"),
            )
    post_snapshot = None
    if wrote:
        post_snapshot = _post_migrate_snapshot(db_path, store, deadline, durations)
    return {
        "db": str(db_path),
        "new_database": not existed,
        "restored": restored["restored"] if restored else None,
        "post_migrate_snapshot_id": post_snapshot,
        "snapshot_id": snapshot_facts.get("snapshot_id"),
        "snapshot_unchanged": snapshot_facts.get("unchanged", False),
        "schema_accepted": accepted.get("acceptance_id") if accepted else None,
        **migrated,
    }


def _will_write(db_path: Path, migrations: list[Migration], deadline: Deadline) -> bool:
    """Whether migrating will change the database (files to apply, adopt, or checksums to record).
    A database the job cannot assess counts as one it will write: the migrate step says why."""
    try:
        with database.opened(db_path) as conn:
            assessment = assess(conn, migrations, deadline=deadline)
            assessment.replay.close()
    except JobError:
        return True
    return bool(assessment.pending or assessment.adopt or assessment.backfill or assessment.unrecorded)


def _post_migrate_snapshot(
    db_path: Path, store: Store, deadline: Deadline, durations: dict[str, float]
) -> str | None:
    """Snapshot the migrated schema too, so that the next preflight rehearses on what is live now.
    A failure here is reported but does not block the relayer: the migration is committed and the
    pre-migrate snapshot is the way back."""
    try:
        with step("post_migrate_snapshot", durations):
            facts = snapshot.create(db_path, store, reason="post-migrate", deadline=deadline)
    except JobError as exc:
        get_logger().warning("snapshot.post_migrate_failed", error=exc.message, error_code=exc.error_code)
        return None
    return str(facts["snapshot_id"])


def gate(
    config: Config, argv: list[str], *, hold_lock: bool, supervise: bool = False
) -> tuple[dict[str, Any], DiskLock | None]:
    """`gate`: check that COMMAND can be started, deploy, and with `hold_lock` (implied by
    `supervise`) keep a shared lock for COMMAND's lifetime; the caller then execs or supervises
    COMMAND (only after a success). The facts, and the shared lock if kept."""
    if not argv:
        raise UsageError("gate: give the command to start after a successful deploy: gate -- relayer")
    if shutil.which(argv[0]) is None:
        found = Path(argv[0]) if "/" in argv[0] else None
        why = "is not executable" if found is not None and found.is_file() else "not found on PATH"
        raise UsageError(f"gate: command {argv[0]!r} {why}; nothing was changed")
    facts, lock = run(config, keep_lock=hold_lock or supervise)
    if lock is not None:
        how = "--supervise" if supervise else "--hold-lock"
        lock.share(holder=f"{' '.join(argv)} ({RELAYER_HOLDER} {how})")
    return {**facts, "exec": argv, "supervised": supervise}, lock


def start_failed(argv: list[str], exc: OSError) -> int:
    """COMMAND could not be started after a successful deploy (not executable, say): logged as
    `gate.exec_failed`, exit 2."""
    get_logger().error(
        "gate.exec_failed",
        command=argv,
        error=f"cannot start {argv[0]}: {exc.strerror or exc}",
        exit_code=UsageError.exit_code,
    )
    return UsageError.exit_code
