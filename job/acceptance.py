"""Accepted schema differences: a known difference between the live schema and the migrations,
accepted once by an operator (`schema accept --reason`), audited, and honoured by every later run.

An acceptance records, for each object that differs, a fingerprint of its live description and of
the description the migrations give it. It covers a later difference only while both fingerprints
still match: any other or additional difference, or a migration that changes an accepted object, is
drift again. The table belongs to the job; the relayer never reads it, and the drift check ignores it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from job.schema import ACCEPTANCES_TABLE, Schema

TABLE = ACCEPTANCES_TABLE
ABSENT = "absent"


def fingerprint(description: Any) -> str:
    """A short, stable fingerprint of a schema (or of one object's description)."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _object_fingerprint(schema: Schema, key: str) -> str:
    return fingerprint(schema[key]) if key in schema else ABSENT


@dataclass(frozen=True)
class Acceptance:
    id: int
    accepted_at: str
    reason: str
    accepted_by: str
    ledger_version: str
    live_fingerprint: str
    differences: dict[str, list[str]]
    objects: dict[str, dict[str, str]]  # object key -> {"live": fp, "expected": fp}
    adopted: list[str]
    deploy: dict[str, str]
    revoked_at: str | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def label(self) -> str:
        return f"acceptance #{self.id} ({self.accepted_at}: {self.reason!r})"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "accepted_at": self.accepted_at,
            "reason": self.reason,
            "accepted_by": self.accepted_by,
            "ledger_version": self.ledger_version,
            "live_fingerprint": self.live_fingerprint,
            "differences": self.differences,
            "adopted": self.adopted,
            "deploy": self.deploy,
            "active": self.active,
            "revoked_at": self.revoked_at,
        }


def exists(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
    return row.fetchone() is not None


def load(conn: sqlite3.Connection) -> list[Acceptance]:
    """Every acceptance ever recorded in this database, oldest first (empty without the table)."""
    if not exists(conn):
        return []
    rows = conn.execute(
        f"SELECT id, accepted_at, reason, accepted_by, ledger_version, live_fingerprint, differences, "
        f"objects, adopted, deploy, revoked_at, revoked_by FROM {TABLE} ORDER BY id"
    ).fetchall()
    return [
        Acceptance(
            id=row[0],
            accepted_at=row[1],
            reason=row[2],
            accepted_by=row[3],
            ledger_version=row[4],
            live_fingerprint=row[5],
            differences=json.loads(row[6]),
            objects=json.loads(row[7]),
            adopted=json.loads(row[8]),
            deploy=json.loads(row[9]),
            revoked_at=row[10],
            revoked_by=row[11],
        )
        for row in rows
    ]


def uncovered(
    drift: dict[str, list[str]], live: Schema, expected: Schema, acceptances: list[Acceptance]
) -> tuple[dict[str, list[str]], list[Acceptance]]:
    """The part of `drift` no active acceptance covers, and the acceptances that cover the rest.
    An object is covered only while its live and its expected description are both exactly as they
    were when the difference was accepted (the newest acceptance of an object decides)."""
    newest: dict[str, tuple[Acceptance, dict[str, str]]] = {}
    for acceptance in acceptances:
        if acceptance.active:
            for key, prints in acceptance.objects.items():
                newest[key] = (acceptance, prints)
    left: dict[str, list[str]] = {}
    used: dict[int, Acceptance] = {}
    for key, items in drift.items():
        found = newest.get(key)
        now = {"live": _object_fingerprint(live, key), "expected": _object_fingerprint(expected, key)}
        if found is not None and found[1] == now:
            used[found[0].id] = found[0]
        else:
            left[key] = items
    return left, list(used.values())


def touched_objects(drift: dict[str, list[str]], acceptances: list[Acceptance]) -> list[str]:
    """Objects of `drift` that an active acceptance names (with other fingerprints): the accepted
    difference changed, e.g. a later migration altered the object."""
    named = {key for a in acceptances if a.active for key in a.objects}
    return sorted(key for key in drift if key in named)


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        "id INTEGER PRIMARY KEY, accepted_at TEXT NOT NULL, reason TEXT NOT NULL, "
        "accepted_by TEXT NOT NULL, ledger_version TEXT NOT NULL, live_fingerprint TEXT NOT NULL, "
        "differences TEXT NOT NULL, objects TEXT NOT NULL, adopted TEXT NOT NULL, deploy TEXT NOT NULL, "
        "revoked_at TEXT, revoked_by TEXT)"
    )


def record(
    conn: sqlite3.Connection,
    *,
    accepted_at: str,
    reason: str,
    accepted_by: str,
    ledger_version: str,
    drift: dict[str, list[str]],
    live: Schema,
    expected: Schema,
    adopted: list[str],
    deploy: dict[str, str],
) -> int:
    """Record one acceptance; its id. Call inside the caller's write transaction."""
    _prepare(conn)
    objects = {
        key: {"live": _object_fingerprint(live, key), "expected": _object_fingerprint(expected, key)}
        for key in drift
    }
    cursor = conn.execute(
        f"INSERT INTO {TABLE} (accepted_at, reason, accepted_by, ledger_version, live_fingerprint, "
        "differences, objects, adopted, deploy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            accepted_at,
            reason,
            accepted_by,
            ledger_version,
            fingerprint(live),
            json.dumps(drift, sort_keys=True),
            json.dumps(objects, sort_keys=True),
            json.dumps(adopted),
            json.dumps(deploy, sort_keys=True),
        ),
    )
    return int(cursor.lastrowid or 0)


def revoke(conn: sqlite3.Connection, acceptance_id: int, *, revoked_at: str, revoked_by: str) -> bool:
    """Mark an active acceptance revoked (kept for the audit trail); False if there was none."""
    if not exists(conn):
        return False
    cursor = conn.execute(
        f"UPDATE {TABLE} SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
        (revoked_at, revoked_by, acceptance_id),
    )
    return cursor.rowcount == 1
