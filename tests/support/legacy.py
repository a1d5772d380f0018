"""Realistic relayer databases for the tests, built the way the relayer itself would have left them."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
TS = "2026-01-15T10:00:00Z"


def relayer_startup(db_path: Path, migrations_dir: Path = MIGRATIONS) -> list[str]:
    """One start of the relayer (tests.support.relayer_model) with `migrations_dir`: the names its
    own runner applied, [] when it finds everything recorded."""
    from tests.support.relayer_model import start

    return start(db_path, migrations_dir)


def _id() -> str:
    return str(uuid.uuid4())


def build_legacy_001(db_path: Path, *, commands: int = 3000, ledger: bool = True) -> dict[str, int]:
    """A database at schema 001 with data in every table, as the relayer left it; row counts."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript((MIGRATIONS / "001_initial.sql").read_text())
    if ledger:
        conn.execute("CREATE TABLE IF NOT EXISTS _schema_migrations (name TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO _schema_migrations (name) VALUES ('001_initial.sql')")
    admin = _id()
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO admin VALUES (?, 'ops', 'argon2$hash', 'TOTPSECRET', 1, 1, ?, ?)",
        (admin, TS, TS),
    )
    executor, controller = _id(), _id()
    conn.execute(
        "INSERT INTO devices VALUES (?, ?, 'exec-1', 'laptop', 'executor', 'th1', ?, ?)",
        (executor, admin, TS, TS),
    )
    conn.execute(
        "INSERT INTO devices VALUES (?, ?, 'ctrl-1', 'phone', 'controller', 'th2', ?, ?)",
        (controller, admin, TS, TS),
    )
    for i in range(12):
        conn.execute(
            "INSERT INTO pairing_codes VALUES (?, ?, ?, ?, ?, ?)",
            (_id(), f"CODE{i:04d}", executor, i % 2, TS, TS),
        )
    conn.executemany(
        "INSERT INTO commands (id, device_id, input, status, output, summary, repo_path, "
        "context_mode, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                _id(),
                controller if i % 3 else executor,
                f"run task {i}",
                "done" if i % 4 else "pending",
                f"output {i} " * 5,
                f"summary {i}",
                "/srv/repo",
                "full",
                TS,
                TS,
            )
            for i in range(commands)
        ],
    )
    for i in range(5):
        conn.execute(
            "INSERT INTO repos VALUES (?, ?, ?, ?, ?)", (_id(), admin, f"/srv/repo{i}", f"repo{i}", TS)
        )
    conn.execute("COMMIT")
    conn.close()
    return {"admin": 1, "devices": 2, "pairing_codes": 12, "commands": commands, "repos": 5}


def row_counts(db_path: Path, tables: list[str]) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        conn.close()


def dump(db_path: Path) -> list[str]:
    """Schema and data, for 'byte-for-byte unchanged' comparisons that survive page reordering."""
    conn = sqlite3.connect(db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1])
    counts = build_legacy_001(target)
    print(f"legacy relayer database at schema 001: {target} ({counts})")
