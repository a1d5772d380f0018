"""`relayer-job restore`: put a proved snapshot back in place of the live database.

Safety, in order: the disk lock (so no job, and no relayer started by `gate --hold-lock`, is using
the database); the request resolved to one snapshot and recorded on the disk before anything else,
so that a retry after a crash at any point restores that same snapshot; the snapshot downloaded
beside the database and proved (both SHA-256 values, and the health checks a deploy applies:
quick_check and foreign_key_check, skipped only when the manifest records that the snapshot's copy
passed them) before anything live is touched; nobody else with the database open; the current
database snapshotted first (`pre-restore`) when it holds data, and kept on the disk under a unique
`.replaced-<time>` name together with any journal files, so that a hot journal can never be
applied to the restored file; then one atomic rename. At most RESTORE_KEEP_REPLACED replaced
databases stay on the disk.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from job import catalog, database, inuse, newdb, scratch, snapshot
from job.config import Config
from job.deadline import Deadline
from job.environment import (
    check_location,
    ensure_directory,
    fsync_directory,
    require_free_space,
    require_sqlite_version,
)
from job.errors import (
    DeadlineExceeded,
    EnvironmentRefused,
    JobError,
    Stopped,
    UsageError,
    VerificationFailed,
)
from job.lock import held
from job.log import get_logger
from job.manifest import Manifest, data_key
from job.store import Store, open_store

SIDECARS = inuse.SIDECARS
RESTORE_MARKER = scratch.RECORD_PREFIX  # the start path's request (RESTORE_SNAPSHOT, deploy --restore)
MANUAL_MARKER = f"{scratch.RECORD_PREFIX}-manual"  # the last `restore` command
STARTED, DONE = "started", "done"
REPLACED = ".replaced-"
KEPT_NAME = re.compile(r"\.replaced-([0-9]{8}T[0-9]{6}Z)(?:-([0-9]+))?")
OVERRIDE_FLAG = "--ignore-other-connections"


@dataclass(frozen=True)
class Record:
    """A restore request resolved to one snapshot, written to the disk before anything is changed
    (`started`) and again once the restore is complete (`done`): a retry after a crash at any point
    restores the snapshot chosen the first time, whatever the store holds by then (a pre-restore
    snapshot of the database being replaced, say)."""

    request: str
    id: str | None
    state: str
    at: str

    @classmethod
    def read(cls, path: Path) -> Record | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        if isinstance(raw, dict) and all(isinstance(raw.get(k), str) for k in ("request", "state", "at")):
            found = raw.get("id")
            return cls(raw["request"], found if isinstance(found, str) else None, raw["state"], raw["at"])
        return cls(text.strip(), None, DONE, "")  # an earlier version's marker: the request, carried out

    def write(self, path: Path) -> None:
        """Atomically and durably: after a crash the old record or the new one is there, whole."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(asdict(self)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_directory(path.parent)


def _resolve_once(store: Store, request: str, record: Path) -> tuple[Manifest, Record | None]:
    """The snapshot for `request`: the one an unfinished earlier run of the same request chose,
    else resolved now and recorded before anything is changed. Also the record found before."""
    log = get_logger()
    previous = Record.read(record)
    if previous and previous.state == STARTED and previous.request == request and previous.id:
        log.warning(
            "restore.resumed",
            id=previous.id,
            request=request,
            since=previous.at,
            record=str(record),
            note="an earlier run of this request stopped before it finished: restoring the snapshot "
            "it chose (delete the record to choose afresh)",
        )
        return catalog.resolve(store, previous.id), previous
    manifest = catalog.resolve(store, request)
    Record(request, manifest.id, STARTED, database.now_iso()).write(record)
    log.info("restore.resolved", request=request, id=manifest.id, record=str(record))
    return manifest, previous


def _unique_aside(db_path: Path) -> str:
    """A `.replaced-<time>` name free for the database and each of its journal files, numbered
    after any other of the same second (`-2`, `-3`, ...) so that names still sort by age."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{db_path.name}{REPLACED}{stamp}"
    taken = [
        int(match[2] or 1)
        for path in db_path.parent.glob(f"{glob.escape(base)}*")
        if (match := KEPT_NAME.match(path.name[len(db_path.name) :])) and match[1] == stamp
    ]
    for n in itertools.count(max(taken, default=0) + 1):
        name = f"{db_path}{REPLACED}{stamp}" + (f"-{n}" if n > 1 else "")
        if not any(os.path.lexists(name + suffix) for suffix in ("", *SIDECARS)):
            return name
    raise AssertionError("unreachable")


def _keep_aside(db_path: Path) -> list[str]:
    """Keep the current database under a unique `.replaced-<time>` name (a hard link, so `db_path`
    never stops existing) and move its journal files beside it: a hot journal must never meet the
    restored file. A crash after this leaves the old database in place, whole or with its journal
    beside the kept copy."""
    while True:
        aside = _unique_aside(db_path)
        try:
            if db_path.exists():
                os.link(db_path, aside)
            break
        except FileExistsError:  # taken since we looked: take the next one
            continue
    kept = [aside] if db_path.exists() else []
    for name in SIDECARS:
        path = Path(f"{db_path}{name}")
        if path.exists():
            path.replace(f"{aside}{name}")
            kept.append(f"{aside}{name}")
    fsync_directory(db_path.parent)
    return kept


def kept_copies(db_path: Path) -> list[Path]:
    """The databases earlier restores replaced, kept on the disk, newest first."""
    found = []
    for path in db_path.parent.glob(f"{glob.escape(db_path.name)}{REPLACED}*"):
        match = KEPT_NAME.fullmatch(path.name[len(db_path.name) :])
        if match:
            found.append(((match[1], int(match[2] or 1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def _limit_kept(db_path: Path, keep: int, *, only_copy: str | None) -> list[str]:
    """Remove the replaced databases beyond the newest `keep` (RESTORE_KEEP_REPLACED), journal files
    included. `only_copy`, replaced by this restore without a pre-restore snapshot, is the only copy
    of what it holds and is never removed here."""
    log = get_logger()
    removed = []
    for path in kept_copies(db_path)[keep:]:
        if str(path) == only_copy:
            log.warning(
                "restore.replaced_kept",
                path=str(path),
                keep=keep,
                reason="no pre-restore snapshot of it was taken: it is the only copy of what it holds",
            )
            continue
        for item in (path, *(Path(f"{path}{suffix}") for suffix in SIDECARS)):
            if item.exists():
                size = item.stat().st_size
                item.unlink()
                log.info("restore.replaced_removed", path=str(item), bytes=size, keep=keep)
                removed.append(str(item))
    return removed


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
    """A pre-restore snapshot of the database being replaced, when it can be taken; a stop or the
    deadline ends the restore instead."""
    try:
        facts = snapshot.create(db_path, store, reason=catalog.PRE_RESTORE, deadline=deadline, way_back=True)
    except (Stopped, DeadlineExceeded):
        raise
    except JobError as exc:
        get_logger().warning(
            "restore.pre_restore_snapshot_failed",
            error=exc.message,
            note="the current database is kept on the disk under a .replaced- name instead",
        )
        return None
    return str(facts["snapshot_id"])


def _holds(db_path: Path, manifest: Manifest, deadline: Deadline) -> bool:
    """Whether the live database is the snapshot byte for byte, with no journal waiting to change it:
    a retry after the swap, or the same restore asked again with nothing written since. No SQLite
    connection of this process is open on it here, so reading it as a file drops no lock."""
    if any(Path(f"{db_path}{suffix}").exists() for suffix in SIDECARS):
        return False
    try:
        if db_path.stat().st_size != manifest.raw_size:
            return False
    except FileNotFoundError:
        return False
    return catalog.sha256_of(db_path, deadline) == manifest.raw_sha256


def restore(
    config: Config,
    store: Store,
    manifest: Manifest,
    *,
    deadline: Deadline,
    replace: bool,
    maybe_in_place: bool = False,
    ignore_others: bool | None = None,
) -> dict[str, Any]:
    """Restore `manifest`'s snapshot to the database; the caller holds the disk lock. `replace`
    allows replacing a database that holds data; `maybe_in_place` says the database may already be
    this snapshot (then it is compared first); `ignore_others` is the manual override of the check
    for other processes using the database (None: no override, as in the start path)."""
    log = get_logger()
    db_path = config.db_path
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
    holds_data = newdb.blank(db_path) is None
    if holds_data and not replace:
        raise _needs_force(db_path)
    facts: dict[str, Any] = {"restored": manifest.id, "schema_version": manifest.schema_version}
    if maybe_in_place and _holds(db_path, manifest, deadline):
        log.info("restore.already_in_place", id=manifest.id, db=str(db_path), note="nothing was changed")
        return {**facts, "already_in_place": True, "pre_restore_snapshot_id": None, "kept": []}

    def refuse_others() -> None:
        override = None if ignore_others is None else OVERRIDE_FLAG
        inuse.refuse_others(db_path, override=override, overridden=bool(ignore_others))

    refuse_others()  # before the download, to fail early; again just before the swap
    downloaded = 0 if store.local_path(data_key(manifest.id)) else manifest.compressed_size
    needed = manifest.raw_size + downloaded + (16 << 20)
    what = "the restore (the snapshot's database, its download from a remote store, 16 MiB)"
    removed = []
    if holds_data and shutil.disk_usage(directory).free < needed:
        # The copy this restore keeps aside counts toward RESTORE_KEEP_REPLACED: the oldest kept
        # copy it would remove at the end makes room now instead.
        removed = _limit_kept(db_path, max(config.keep_replaced - 1, 0), only_copy=None)
    require_free_space(directory, needed, what=what)
    with database.scratch_file(directory, scratch.RESTORE_PREFIX, ".db") as incoming:
        catalog.prove(store, manifest, incoming, deadline=deadline)
        log.info("restore.verified", id=manifest.id, raw_sha256=manifest.raw_sha256)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-fsync") as background:
            # The restored file reaches the disk while the pre-restore snapshot runs: both come
            # before the swap, in either order.
            durable = background.submit(_fsync, incoming)
            pre_restore = _snapshot_current(db_path, store, deadline) if holds_data else None
            durable.result()
        _match_ownership(incoming, db_path)
        deadline.check("replacing the database")
        if not ignore_others:
            refuse_others()
        kept = _swap(incoming, db_path)
    only_copy = kept[0] if kept and holds_data and pre_restore is None else None
    removed += _limit_kept(db_path, config.keep_replaced, only_copy=only_copy)
    log.info("restore.completed", id=manifest.id, db=str(db_path), kept=kept, removed=removed)
    return {
        **facts,
        "pre_restore_snapshot_id": pre_restore,
        "kept": kept,
        "removed": removed,
        "db": str(db_path),
    }


def _fsync(path: Path) -> None:
    try:
        with path.open("rb") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        raise EnvironmentRefused(
            f"cannot make the restored copy {path} durable: {exc.strerror or exc}; nothing was "
            "replaced; check the disk, then run the restore again"
        ) from exc


def _needs_force(db_path: Path) -> UsageError:
    return UsageError(
        f"{db_path} exists; pass --force to replace it (it is snapshotted first and kept on "
        "the disk), or --if-db-not-exists to restore only onto an empty disk"
    )


def _swap(incoming: Path, db_path: Path) -> list[str]:
    """Keep the current database aside, then rename the proved file into its place."""
    kept = _keep_aside(db_path)
    incoming.replace(db_path)
    fsync_directory(db_path.parent)
    return kept


def _finish(record: Path, request: str, manifest: Manifest) -> None:
    Record(request, manifest.id, DONE, database.now_iso()).write(record)


def run(
    config: Config, *, which: str, force: bool, if_db_not_exists: bool, ignore_others: bool = False
) -> dict[str, Any]:
    """`relayer-job restore`: resolved once (recorded beside the database, so that a retry after a
    crash restores the same snapshot), then `restore`."""
    log = get_logger()
    require_sqlite_version()
    deadline = Deadline(config.deadline)
    db_path = config.db_path
    check_location(config)
    store = open_store(config.store_url, config.s3, deadline)
    ensure_directory(db_path.parent)
    with held(config.lock_file, timeout=config.lock_timeout, command="restore"):
        scratch.remove_leftovers(db_path.parent)
        holds_data = newdb.blank(db_path) is None
        if if_db_not_exists and holds_data:
            log.info("restore.skipped", reason="database exists", db=str(db_path))
            return {"restored": None, "skipped": "database exists"}
        if holds_data and not force:  # refused before anything is resolved or recorded
            raise _needs_force(db_path)
        record = db_path.parent / MANUAL_MARKER
        manifest, previous = _resolve_once(store, which, record)
        again = previous is not None and previous.id == manifest.id
        if again and previous is not None and previous.state == DONE:
            log.warning(
                "restore.repeated",
                id=manifest.id,
                request=which,
                previous_at=previous.at,
                note="the last restore restored this same snapshot: unless the database changed "
                "since, nothing is done",
            )
        facts = restore(
            config,
            store,
            manifest,
            deadline=deadline,
            replace=force,
            maybe_in_place=again,
            ignore_others=ignore_others,
        )
        _finish(record, which, manifest)
        return facts


def requested_once(config: Config, store: Store, deadline: Deadline) -> dict[str, Any] | None:
    """The start-path restore (`RESTORE_SNAPSHOT` / `deploy --restore`): done once per request.

    Render re-runs a failing start command and restarts crashed services, so the request, the
    snapshot it resolved to and whether it is done are recorded on the disk, and a request is not
    carried out again while it stays the same. The caller holds the disk lock."""
    request = config.restore_snapshot
    if not request:
        return None
    record = config.db_path.parent / RESTORE_MARKER
    previous = Record.read(record)
    if previous and previous.state == DONE and previous.request == request:
        get_logger().info("restore.already_done", request=request, id=previous.id, marker=str(record))
        return None
    try:
        manifest, previous = _resolve_once(store, request, record)
        facts = restore(
            config,
            store,
            manifest,
            deadline=deadline,
            replace=True,
            maybe_in_place=previous is not None and previous.id == manifest.id,
        )
    except (UsageError, VerificationFailed) as exc:
        exc.message = (
            f"--restore / RESTORE_SNAPSHOT={request}: {exc.message}; correct or remove it and redeploy"
        )
        raise
    except JobError as exc:
        exc.message = f"--restore / RESTORE_SNAPSHOT={request}: {exc.message}"
        raise
    _finish(record, request, manifest)
    return facts
