"""Accepted schema differences: a known difference between the live schema and the migrations,
accepted once by an operator (`schema accept --reason`), audited, and honoured by every later run.

An acceptance records, for each differing item (a column, an index, a constraint, a whole object),
a fingerprint of its live description and of the description the migrations give it. It covers a
later difference only while both fingerprints still match: any other or additional difference is
drift again, and so is a migration that changes an accepted item (job.migrate checks that inside
the migration's transaction). The table belongs to the job; the relayer never reads it, and the
drift check ignores it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from job.errors import DatabaseProblem
from job.schema import ACCEPTANCES_TABLE, Item, Schema, lookup

TABLE = ACCEPTANCES_TABLE
ABSENT = "absent"
COLUMNS = (
    "id",
    "accepted_at",
    "reason",
    "accepted_by",
    "ledger_version",
    "live_fingerprint",
    "differences",
    "objects",
    "adopted",
    "deploy",
    "revoked_at",
    "revoked_by",
)


def fingerprint(description: Any) -> str:
    """A short, stable fingerprint of a schema, of one item's description (None: absent), or of a
    set of differences."""
    if description is None:
        return ABSENT
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def prints(item: Item) -> dict[str, str]:
    return {"live": fingerprint(item.live), "expected": fingerprint(item.expected)}


@dataclass(frozen=True)
class Acceptance:
    id: int
    accepted_at: str
    reason: str
    accepted_by: str
    ledger_version: str
    live_fingerprint: str
    differences: dict[str, list[str]]
    items: dict[str, dict[str, str]]  # item key -> {"live": fp, "expected": fp}
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


def _damaged(what: str) -> DatabaseProblem:
    return DatabaseProblem(
        f"{TABLE} is damaged: {what}; it is the job's record of accepted schema differences, never "
        "edited by hand: restore a snapshot taken before the change, or drop the table (every "
        "acceptance is then gone) and accept again"
    )


def _row(row: tuple[Any, ...]) -> Acceptance:
    try:
        raw = dict(zip(COLUMNS, row, strict=True))
        decoded = {k: json.loads(raw[k]) for k in ("differences", "objects", "adopted", "deploy")}
        shapes_ok = (
            isinstance(raw["id"], int)
            and all(isinstance(raw[k], str) for k in COLUMNS[1:6])
            and isinstance(decoded["differences"], dict)
            and all(isinstance(v, list) for v in decoded["differences"].values())
            and isinstance(decoded["objects"], dict)
            and all(
                isinstance(v, dict) and set(v) == {"live", "expected"} for v in decoded["objects"].values()
            )
            and isinstance(decoded["adopted"], list)
            and isinstance(decoded["deploy"], dict)
            and all(raw[k] is None or isinstance(raw[k], str) for k in ("revoked_at", "revoked_by"))
        )
    except (TypeError, ValueError) as exc:
        raise _damaged(f"row {row[0]!r} does not parse ({exc})") from exc
    if not shapes_ok:
        raise _damaged(f"row {row[0]!r} has fields of the wrong type")
    return Acceptance(
        id=raw["id"],
        accepted_at=raw["accepted_at"],
        reason=raw["reason"],
        accepted_by=raw["accepted_by"],
        ledger_version=raw["ledger_version"],
        live_fingerprint=raw["live_fingerprint"],
        differences=decoded["differences"],
        items=decoded["objects"],
        adopted=decoded["adopted"],
        deploy=decoded["deploy"],
        revoked_at=raw["revoked_at"],
        revoked_by=raw["revoked_by"],
    )


def load(conn: sqlite3.Connection) -> list[Acceptance]:
    """Every acceptance ever recorded in this database, oldest first (empty without the table);
    DatabaseProblem (exit 5) naming the table when it is not the job's or a row does not parse."""
    if not exists(conn):
        return []
    present = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
    if set(present) != set(COLUMNS):
        raise _damaged(f"its columns are {', '.join(present)}, not the job's")
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY id").fetchall()
    return [_row(row) for row in rows]


def _newest(acceptances: list[Acceptance]) -> dict[str, tuple[Acceptance, dict[str, str]]]:
    """For every accepted item, the newest active acceptance of it and its fingerprints."""
    newest: dict[str, tuple[Acceptance, dict[str, str]]] = {}
    for acceptance in acceptances:
        if acceptance.active:
            for key, item_prints in acceptance.items.items():
                newest[key] = (acceptance, item_prints)
    return newest


def uncovered(
    items: dict[str, Item], acceptances: list[Acceptance]
) -> tuple[dict[str, Item], list[Acceptance]]:
    """The differences no active acceptance covers, and the acceptances that cover the rest. An
    item is covered only while its live and its expected description are both exactly as they were
    when it was accepted."""
    newest = _newest(acceptances)
    left: dict[str, Item] = {}
    used: dict[int, Acceptance] = {}
    for key, item in items.items():
        found = newest.get(key)
        if found is not None and found[1] == prints(item):
            used[found[0].id] = found[0]
        else:
            left[key] = item
    return left, list(used.values())


def changed_items(before: Schema, after: Schema, acceptances: list[Acceptance]) -> list[str]:
    """Accepted items whose live description differs between two schemas: something (a migration)
    touched what an operator accepted as it was."""
    return sorted(
        key
        for key in _newest(acceptances)
        if fingerprint(lookup(before, key)) != fingerprint(lookup(after, key))
    )


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
    items: dict[str, Item],
    live: Schema,
    adopted: list[str],
    deploy: dict[str, str],
) -> int:
    """Record one acceptance; its id. Call inside the caller's write transaction."""
    _prepare(conn)
    grouped: dict[str, list[str]] = {}
    for item in items.values():
        grouped.setdefault(item.obj, []).append(item.message)
    cursor = conn.execute(
        f"INSERT INTO {TABLE} (accepted_at, reason, accepted_by, ledger_version, live_fingerprint, "
        "differences, objects, adopted, deploy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            accepted_at,
            reason,
            accepted_by,
            ledger_version,
            fingerprint(live),
            json.dumps(grouped, sort_keys=True),
            json.dumps({key: prints(item) for key, item in items.items()}, sort_keys=True),
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
