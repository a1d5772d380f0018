"""`relayer-job preflight`: the disk-free checks for Render's pre-deploy command and one-off jobs.

Runs while the old version still serves, so a failure cancels the deploy with zero downtime:
migration files valid, store reachable and writable, and a rehearsal of the pending migrations on
the newest snapshot (the real data). Never touches DATABASE_PATH.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from job import accept, catalog, database
from job.config import Config
from job.deadline import Deadline
from job.environment import require_sqlite_version
from job.errors import StoreError
from job.log import get_logger
from job.migrate import migrate_connection
from job.migrations import discover
from job.store import Store, open_store

PROBE_PREFIX = "preflight/"


def probe(store: Store) -> None:
    """Put, head and delete a small object: the store is reachable and writable."""
    key = f"{PROBE_PREFIX}probe-{uuid.uuid4().hex}"
    payload = b"relayer-job preflight probe\n"
    store.put_bytes(key, payload)
    try:
        info = store.head(key)
        if info is None or info.size != len(payload):
            raise StoreError(f"probe object {store.url}/{key} did not read back after writing it")
    finally:
        store.delete([key])
    get_logger().info("store.writable", store=store.url)


def run(config: Config) -> dict[str, Any]:
    log = get_logger()
    deadline = Deadline(config.deadline)
    require_sqlite_version()
    migrations = discover(config.migrations_dir, deadline)
    log.info("migrations.valid", count=len(migrations), latest=migrations[-1].name)
    store = open_store(config.store_url, config.s3, deadline)
    probe(store)
    # A deploy that restores (RESTORE_SNAPSHOT, e.g. a rollback) will migrate that snapshot's data.
    newest = (
        catalog.resolve(store, config.restore_snapshot)
        if config.restore_snapshot
        else catalog.latest_readable(store)[0]
    )
    with tempfile.TemporaryDirectory(prefix="relayer-job-preflight-") as scratch:
        rehearsal = Path(scratch) / "rehearsal.db"
        if newest is None:
            log.warning(
                "rehearsal.empty",
                store=store.url,
                note="no snapshot in the store: rehearsing on an empty database. Right for a first "
                "deploy; if this service already has data, SNAPSHOT_STORE (bucket or prefix) is wrong",
            )
        else:
            catalog.fetch(store, newest, rehearsal, deadline=deadline)
            log.info("rehearsal.snapshot", id=newest.id, schema_version=newest.schema_version)
        with database.opened(rehearsal, create=True) as conn:
            if newest is not None and not catalog.checked_when_taken(newest):  # the gate would check them
                database.require_foreign_keys(conn, f"snapshot {newest.id}")
            if config.schema_accept_reason and newest is not None:
                accept.requested_once(conn, migrations, config, deadline)
            facts = migrate_connection(
                conn, migrations, deadline=deadline, allow_drift=config.allow_drift, rehearsal=True
            )
    would_apply = [a["name"] for a in facts["applied"]]
    log.info("rehearsal.passed", would_apply=would_apply, would_adopt=facts["adopted"])
    return {
        "rehearsed_on": newest.id if newest else "empty database",
        "would_apply": would_apply,
        "would_adopt": facts["adopted"],
        "schema_version": facts["schema_version"],
        "store": store.url,
    }
