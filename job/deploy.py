"""`relayer-job deploy`: the start-path job on the disk, before the relayer starts.

Checks the environment (refusing loudly when the disk is not there, as in Render's pre-deploy
command), takes the disk lock, checks and snapshots the live database (the way back), applies the
pending migrations and verifies the result. Re-running it after a success only verifies.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from job import database, ledger, restore, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import ensure_directory, refuse_network_fs, require_disk, require_sqlite_version
from job.errors import DatabaseProblem, JobError
from job.lock import DiskLock, acquire
from job.log import get_logger
from job.migrate import migrate_connection
from job.migrations import Migration, discover
from job.store import Store, open_store


@contextlib.contextmanager
def step(name: str, durations: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    yield
    durations[name] = round(time.monotonic() - started, 3)
    get_logger().info("deploy.step_finished", step=name, duration_s=durations[name])


def run(
    config: Config, *, allow_drift: bool = False, keep_lock: bool = False
) -> tuple[dict[str, Any], DiskLock | None]:
    """Run the deploy sequence; the facts for the summary, and the still-held lock if `keep_lock`."""
    log = get_logger()
    deadline = Deadline(config.deadline)
    durations: dict[str, float] = {}
    db_path = config.db_path
    with step("checks", durations):
        require_sqlite_version()
        if config.disk_mount_path is not None:
            require_disk(config.disk_mount_path, db_path)
        migrations = discover(config.migrations_dir)
        store = open_store(config.store_url, config.s3, deadline)
        refuse_network_fs(db_path, allowed=config.allow_network_fs)
    with step("lock", durations):
        ensure_directory(db_path.parent)
        lock = acquire(config.lock_file, timeout=config.lock_timeout, command="deploy")
    try:
        facts = _under_lock(config, store, migrations, deadline, durations, allow_drift)
    except BaseException:
        lock.release()
        raise
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
    allow_drift: bool,
) -> dict[str, Any]:
    log = get_logger()
    db_path = config.db_path
    restored = None
    if config.restore_snapshot:
        with step("restore", durations):
            restored = restore.requested_once(config, store, deadline)
    existed = db_path.exists()
    snapshot_facts: dict[str, Any] = {"snapshot_id": None}
    if existed:
        with step("health", durations), database.opened(db_path) as conn:
            database.require_healthy(conn, f"database {db_path}")
        with step("snapshot", durations):
            snapshot_facts = snapshot.create(db_path, store, reason="pre-migrate", deadline=deadline)
    else:
        log.info(
            "database.missing",
            path=str(db_path),
            note="first deploy on this disk: a new database will be created and migrated",
        )
    with step("migrate", durations), database.opened(db_path, create=True) as conn:
        migrated = migrate_connection(conn, migrations, deadline=deadline, allow_drift=allow_drift)
    with step("verify", durations), database.opened(db_path) as conn:
        database.require_healthy(conn, f"database {db_path} after migrating")
        missing = [m.name for m in migrations if m.name not in ledger.read(conn)]
        if missing:
            raise DatabaseProblem(
                f"ledger problem: {', '.join(missing)} not recorded in {ledger.TABLE} after "
                "migrating; the relayer would re-run them"
            )
    post_snapshot = None
    if migrated["applied"] or migrated["adopted"]:
        post_snapshot = _post_migrate_snapshot(db_path, store, deadline, durations)
    return {
        "db": str(db_path),
        "new_database": not existed,
        "restored": restored["restored"] if restored else None,
        "post_migrate_snapshot_id": post_snapshot,
        "snapshot_id": snapshot_facts.get("snapshot_id"),
        "snapshot_unchanged": snapshot_facts.get("unchanged", False),
        **migrated,
    }


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
