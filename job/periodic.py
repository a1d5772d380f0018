"""Snapshots while the relayer runs (`gate --supervise`): one every SNAPSHOT_INTERVAL on a background
thread, and the final one after a stop. While the relayer has the database open, the snapshot's
copy holds SQLite's read lock (so the relayer's writes wait) only to compare the database with a
copy made without it, and compression and checks start once the copy is made and run at low
priority; the copy itself does not.

Nothing here may take the relayer down: every failure is caught and logged with its exit-code class
(`snapshot.periodic_failed`, `error_code`, `exit_code`), and the next interval tries again. Each
snapshot is the ordinary `snapshot.create` (consistent copy, upload skipped when the database is
unchanged, manifest last), under the shared disk lock the supervisor holds, followed by the
retention.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from job import retain, snapshot
from job.config import Config
from job.deadline import Deadline
from job.errors import classify
from job.log import get_logger
from job.store import open_store

OVERDUE_FACTOR = 2  # warn when the recovery point is older than this many intervals


@dataclass
class Abortable(Deadline):
    """A deadline that a stop ends at once: a periodic snapshot in progress when the relayer is
    stopped gives way to the final one at its next safe point, and is never committed after it."""

    abort: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return 0.0 if self.abort.is_set() else super().remaining()

    def expired(self) -> bool:
        return self.abort.is_set() or super().expired()


def attempt(
    config: Config, reason: str, deadline: Deadline, *, abandoned: threading.Event | None = None
) -> dict[str, Any] | None:
    """One snapshot and the retention after it; its facts, or None when it failed (logged as
    `snapshot.<reason>_failed`, or `snapshot.<reason>_abandoned` when `abandoned` was set)."""
    log = get_logger()
    try:
        store = open_store(config.store_url, config.s3, deadline)
        facts = snapshot.create(config.db_path, store, reason=reason, deadline=deadline)
    except Exception as exc:
        if abandoned is not None and abandoned.is_set():
            log.info(
                f"snapshot.{reason}_abandoned", note="the relayer is stopping; the final snapshot follows"
            )
            return None
        error = classify(exc)
        log.error(
            f"snapshot.{reason}_failed",
            error=error.message,
            error_code=error.error_code,
            exit_code=error.exit_code,
            exc_info=error.exit_code == 1,  # a bug: keep its traceback
        )
        return None
    return {**facts, **retain.after_snapshot(config, store, committed=retain.is_new(facts))}


class Periodic:
    """The background thread. `protected_at` is when the store last held the database as it was
    (a snapshot committed from a copy taken then, or found unchanged then): the recovery point."""

    def __init__(self, config: Config, *, snapshot_id: str | None) -> None:
        self.config = config
        self.interval = config.snapshot_interval
        self.stopping = threading.Event()
        self.protected_at = time.time()  # the gate's own snapshot, just taken or found unchanged
        self.snapshot_id = snapshot_id
        context = contextvars.copy_context()  # run_id and command go along into the log lines
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="periodic snapshots", daemon=True
        )

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """No new snapshot, and the one in progress gives up at its next safe point; wait up to
        `wait` seconds for it (one stuck on the network is left behind, uncommitted)."""
        self.stopping.set()
        if wait > 0 and self._thread.is_alive():
            self._thread.join(wait)

    def _loop(self) -> None:
        with contextlib.suppress(Exception):
            get_logger().info(
                "snapshot.periodic_scheduled",
                interval_s=self.interval,
                priority="the copy at the relayer's priority; while the relayer has the database "
                "open, SQLite's read lock only to compare it with a copy made without the lock, "
                "compression and checks after it at nice +10 and the lowest I/O priority",
            )
        due = time.monotonic() + self.interval
        while not self.stopping.wait(max(due - time.monotonic(), 0.0)):
            due = time.monotonic() + self.interval
            with contextlib.suppress(Exception):  # even a failing log write must not end the loop
                self._once()

    def _once(self) -> None:
        started = time.time()
        deadline = Abortable(self.config.deadline, abort=self.stopping)
        facts = attempt(self.config, "periodic", deadline, abandoned=self.stopping)
        if facts is not None:
            self.protected_at, self.snapshot_id = started, facts["snapshot_id"]
        age = time.time() - self.protected_at
        if age > OVERDUE_FACTOR * self.interval and not self.stopping.is_set():
            get_logger().warning(
                "recovery_point.overdue",
                age_s=round(age),
                interval_s=self.interval,
                snapshot_id=self.snapshot_id,
                hint="periodic snapshots keep failing (see snapshot.periodic_failed): fix the "
                "store, or the data written since then is only on the disk",
            )
