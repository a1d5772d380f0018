"""SNAPSHOT_RETENTION, applied after every new snapshot: by `snapshot`, by `deploy`/`gate` and by the
supervisor (never inside snapshot.create: a snapshot's success must not depend on a prune).

It is `snapshots prune --apply` with the configured policy, so it runs under prune's rules: from the
store alone, without the disk lock (it only deletes what the policy leaves out, never the newest
restorable snapshot, and never a snapshot younger than the listing it decided on). A failure is a
warning: the new snapshot is committed, and the next snapshot retries the retention.
"""

from __future__ import annotations

from typing import Any

from job import catalog, retention, snapshot
from job.config import Config
from job.deadline import Deadline
from job.errors import classify
from job.log import get_logger
from job.store import Store, open_store


def is_new(facts: dict[str, Any]) -> bool:
    """Whether a snapshot's facts say it committed a new snapshot (not `unchanged`, not skipped)."""
    return bool(facts.get("snapshot_id")) and not facts.get("unchanged", False)


def after_snapshot(
    config: Config, store: Store | None, *, committed: bool, deadline: Deadline | None = None
) -> dict[str, Any]:
    """Apply the retention when one is configured and a snapshot was committed; the facts to add
    to the run's summary. Never raises: the failure is logged as `retention.failed`."""
    policy = config.retention
    if policy is None or not committed:
        return {}
    log = get_logger()
    try:
        store = store or open_store(config.store_url, config.s3, deadline or Deadline(config.deadline))
        plan = catalog.prune(store, policy=policy, apply=True)
    except Exception as exc:
        error = classify(exc)
        log.warning(
            "retention.failed",
            error=error.message,
            error_code=error.error_code,
            exit_code=error.exit_code,
            policy=retention.describe(policy),
            note="the snapshot is committed; the next snapshot applies the retention again",
        )
        return {"retention_failed": error.message}
    log.info(
        "retention.applied", policy=retention.describe(policy), kept=len(plan["keep"]), deleted=plan["delete"]
    )
    return {"retention_deleted": plan["delete"]}


def snapshot_command(config: Config, *, reason: str, if_db_exists: bool, force: bool) -> dict[str, Any]:
    """`relayer-job snapshot`: the snapshot, then the retention, within one deadline."""
    deadline = Deadline(config.deadline)
    facts = snapshot.run(config, reason=reason, if_db_exists=if_db_exists, force=force)
    return {**facts, **after_snapshot(config, None, committed=is_new(facts), deadline=deadline)}
