"""`relayer-job restore`: put a verified snapshot back in place of the live database.

Safety, in order: the disk lock (so no job, and no relayer started by `gate --hold-lock`, is using
the database); the snapshot downloaded beside the database and proved (both SHA-256 values and
integrity_check) before anything live is touched; the current database snapshotted first
(`pre-restore`) when it is healthy, and always kept on the disk under a `.replaced-<time>` name
together with any journal files, so that a hot journal can never be applied to the restored file;
then one atomic rename.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from job import catalog, database, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import (
    check_location,
    ensure_directory,
    fsync_directory,
    require_free_space,
    require_sqlite_version,
)
from job.errors import JobError, UsageError
from job.lock import held
from job.log import get_logger
from job.manifest import Manifest
from job.store import Store, open_store

SIDECARS = ("-journal", "-wal", "-shm")
SCRATCH_PREFIX = ".relayer-job-restore-"
RESTORE_MARKER = ".relayer-job-restored"


def _keep_aside(db_path: Path) -> list[str]:
    """Keep the current database under a `.replaced-<time>` name (a hard link, so `db_path` never
    stops existing) and move its journal files beside it: a hot journal must never meet the
    restored file. A crash after this leaves the old database in place, whole or with its journal
    beside the kept copy."""
    suffix = time.strftime(".replaced-%Y%m%dT%H%M%SZ", time.gmtime())
    kept = []
    if db_path.exists():
        os.link(db_path, f"{db_path}{suffix}")
        kept.append(f"{db_path}{suffix}")
    for name in SIDECARS:
        path = Path(f"{db_path}{name}")
        if path.exists():
            path.replace(f"{db_path}{suffix}{name}")
            kept.append(f"{db_path}{suffix}{name}")
    fsync_directory(db_path.parent)
    return kept


def _match_ownership(incoming: Path, db_path: Path) -> None:
    """The restored file gets the replaced one's mode (and owner, when running as root), or the
    mode a newly created database would get; mkstemp's 0600 could lock the relayer out."""
    if db_path.exists():
        st = db_path.stat()
        incoming.chmod(st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(incoming, st.st_uid, st.st_gid)
    else:
        umask = os.umask(0)
        os.umask(umask)
        incoming.chmod(0o666 & ~umask)


def _snapshot_current(db_path: Path, store: Store, deadline: Deadline) -> str | None:
    """A pre-restore snapshot of the database being replaced, when it can be taken."""
    try:
        facts = snapshot.create(db_path, store, reason="pre-restore", deadline=deadline)
    except JobError as exc:
        get_logger().warning(
            "restore.pre_restore_snapshot_failed",
            error=exc.message,
            note="the current database is kept on the disk under a .replaced- name instead",
        )
        return None
    return str(facts["snapshot_id"])


def restore(
    db_path: Path, store: Store, manifest: Manifest, *, deadline: Deadline, replace: bool
) -> dict[str, Any]:
    """Restore `manifest`'s snapshot to `db_path`. The caller holds the disk lock."""
    log = get_logger()
    log.info(
        "restore.selected",
        id=manifest.id,
        reason=manifest.reason,
        created_at=manifest.created_at,
        schema_version=manifest.schema_version,
        commit=manifest.deploy.get("RENDER_GIT_COMMIT"),
    )
    directory = db_path.parent
    ensure_directory(directory)
    exists = db_path.exists()
    if exists and not replace:
        raise UsageError(
            f"{db_path} exists; pass --force to replace it (it is snapshotted first and kept on "
            "the disk), or --if-db-not-exists to restore only onto an empty disk"
        )
    require_free_space(
        directory, manifest.raw_size + manifest.compressed_size + (16 << 20), what="the restore"
    )
    for leftover in directory.glob(f"{SCRATCH_PREFIX}*"):  # from a killed earlier restore
        leftover.unlink(missing_ok=True)
    with database.scratch_file(directory, SCRATCH_PREFIX, ".db") as incoming:
        catalog.fetch(store, manifest, incoming, deadline=deadline)
        log.info("restore.verified", id=manifest.id, raw_sha256=manifest.raw_sha256)
        with incoming.open("rb") as f:
            os.fsync(f.fileno())
        pre_restore = _snapshot_current(db_path, store, deadline) if exists else None
        _match_ownership(incoming, db_path)
        moved = _keep_aside(db_path)
        incoming.replace(db_path)
        fsync_directory(directory)
    with database.opened(db_path) as conn:
        database.require_healthy(conn, f"restored database {db_path}")
    log.info("restore.completed", id=manifest.id, db=str(db_path), kept=moved)
    return {
        "restored": manifest.id,
        "schema_version": manifest.schema_version,
        "pre_restore_snapshot_id": pre_restore,
        "kept": moved,
        "db": str(db_path),
    }


def run(config: Config, *, which: str, force: bool, if_db_not_exists: bool) -> dict[str, Any]:
    log = get_logger()
    require_sqlite_version()
    deadline = Deadline(config.deadline)
    db_path = config.db_path
    check_location(config)
    store = open_store(config.store_url, config.s3, deadline)
    ensure_directory(db_path.parent)
    with held(config.lock_file, timeout=config.lock_timeout, command="restore"):
        if if_db_not_exists and db_path.exists():
            log.info("restore.skipped", reason="database exists", db=str(db_path))
            return {"restored": None, "skipped": "database exists"}
        manifest = catalog.resolve(store, which)
        return restore(db_path, store, manifest, deadline=deadline, replace=force)


def requested_once(config: Config, store: Store, deadline: Deadline) -> dict[str, Any] | None:
    """The start-path restore (`RESTORE_SNAPSHOT` / `deploy --restore`): done once per request.

    Render re-runs a failing start command and restarts crashed services, so the request is
    recorded in a marker file on the disk and not repeated while it stays the same. The caller
    holds the disk lock."""
    request = config.restore_snapshot
    if not request:
        return None
    marker = config.db_path.parent / RESTORE_MARKER
    if marker.exists() and marker.read_text().strip() == request:
        get_logger().info("restore.already_done", request=request, marker=str(marker))
        return None
    try:
        manifest = catalog.resolve(store, request)
        facts = restore(config.db_path, store, manifest, deadline=deadline, replace=True)
    except JobError as exc:
        exc.message = (
            f"--restore / RESTORE_SNAPSHOT={request}: {exc.message}; correct or remove it and redeploy"
        )
        raise
    tmp = marker.with_name(marker.name + ".tmp")
    with tmp.open("w") as f:
        f.write(request + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(marker)
    fsync_directory(marker.parent)
    return facts
