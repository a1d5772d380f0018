"""The user's production database, built the way it really was: by the relayer's own start-up runner
(tests.support.relayer_model) from the relayer's own files, with rows in every table written between
the starts, as the relayer's queries would write them (facts/relayer.md).

Also the expected final schema, written from the facts file (not from migrations/), read back with
plain PRAGMAs so that it does not depend on the code under test.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tests.support.relayer_model import RELAYER_MIGRATIONS, start

TS = "2026-02-03T04:05:06Z"

# (name, type, notnull, default, pk) per table, as PRAGMA table_info reports them.
EXPECTED_COLUMNS: dict[str, list[tuple[object, ...]]] = {
    "admin": [
        ("id", "TEXT", 0, None, 1),
        ("username", "TEXT", 1, None, 0),
        ("password_hash", "TEXT", 1, None, 0),
        ("totp_secret", "TEXT", 1, None, 0),
        ("mfa_enabled", "INTEGER", 0, "0", 0),
        ("executor_registered", "INTEGER", 0, "0", 0),
        ("created_at", "TEXT", 1, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
    ],
    "devices": [
        ("id", "TEXT", 0, None, 1),
        ("admin_id", "TEXT", 1, None, 0),
        ("device_id", "TEXT", 1, None, 0),
        ("name", "TEXT", 0, None, 0),
        ("role", "TEXT", 1, None, 0),
        ("token_hash", "TEXT", 0, None, 0),
        ("registered_at", "TEXT", 1, None, 0),
        ("last_seen_at", "TEXT", 1, None, 0),
    ],
    "device_registration_codes": [
        ("id", "TEXT", 0, None, 1),
        ("code", "TEXT", 1, None, 0),
        ("created_by_device_id", "TEXT", 1, None, 0),
        ("used", "INTEGER", 0, "0", 0),
        ("expires_at", "TEXT", 1, None, 0),
        ("created_at", "TEXT", 1, None, 0),
    ],
    "commands": [
        ("id", "TEXT", 0, None, 1),
        ("device_id", "TEXT", 1, None, 0),
        ("input", "TEXT", 1, None, 0),
        ("status", "TEXT", 1, "'pending'", 0),
        ("output", "TEXT", 0, None, 0),
        ("summary", "TEXT", 0, None, 0),
        ("repo_path", "TEXT", 0, None, 0),
        ("context_mode", "TEXT", 0, None, 0),
        ("created_at", "TEXT", 1, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
        ("translator_model", "TEXT", 0, None, 0),
        ("workload_model", "TEXT", 0, None, 0),
        ("cursor_chat_id", "TEXT", 0, None, 0),
    ],
    "repos": [
        ("id", "TEXT", 0, None, 1),
        ("admin_id", "TEXT", 1, None, 0),
        ("path", "TEXT", 1, None, 0),
        ("name", "TEXT", 0, None, 0),
        ("created_at", "TEXT", 1, None, 0),
    ],
    "bootstrap_devices": [("token_hash", "TEXT", 0, None, 1), ("created_at", "TEXT", 1, None, 0)],
}
# (from column, parent table, parent column, on delete) per table.
EXPECTED_FOREIGN_KEYS = {
    "devices": [("admin_id", "admin", "id", "CASCADE")],
    "device_registration_codes": [("created_by_device_id", "devices", "id", "CASCADE")],
    "commands": [("device_id", "devices", "id", "CASCADE")],
    "repos": [("admin_id", "admin", "id", "CASCADE")],
}
# (unique, partial, columns) per table: UNIQUE constraints, the partial unique index, primary keys.
EXPECTED_INDEXES = {
    "admin": [(1, 0, ("id",)), (1, 0, ("username",))],
    "devices": [(1, 0, ("admin_id", "device_id")), (1, 0, ("id",))],
    "device_registration_codes": [(1, 0, ("code",)), (1, 0, ("id",))],
    "commands": [(1, 0, ("id",))],
    "repos": [(1, 0, ("id",))],
    "bootstrap_devices": [(1, 0, ("token_hash",))],
}
EXPECTED_PARTIAL_INDEXES = {"idx_one_executor": ("devices", ("admin_id",), "role = 'executor'")}


def actual_schema(db_path: Path) -> dict[str, Any]:
    """Tables (ledger and the job's own tables left out), columns, foreign keys and indexes, read
    with PRAGMAs only, in the shape of the EXPECTED_* constants."""
    conn = sqlite3.connect(db_path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        columns = {t: [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        fks = {
            t: sorted((r[3], r[2], r[4], r[6]) for r in conn.execute(f"PRAGMA foreign_key_list({t})"))
            for t in tables
        }
        indexes: dict[str, list[tuple[object, ...]]] = {}
        partial: dict[str, tuple[object, ...]] = {}
        for t in tables:
            for _seq, name, unique, _origin, is_partial in conn.execute(f"PRAGMA index_list({t})"):
                cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
                if is_partial:
                    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
                    clause = re.split(r"\bwhere\b", sql, maxsplit=1, flags=re.IGNORECASE)[1:]
                    where = " ".join(clause[0].lower().split()) if clause else None
                    partial[name] = (t, cols, where)
                else:
                    indexes.setdefault(t, []).append((unique, is_partial, cols))
            if t in indexes:
                indexes[t].sort()
        return {
            "columns": columns,
            "foreign_keys": {t: v for t, v in fks.items() if v},
            "indexes": indexes,
            "partial": partial,
        }
    finally:
        conn.close()


def expected_schema() -> dict[str, Any]:
    return {
        "columns": EXPECTED_COLUMNS,
        "foreign_keys": EXPECTED_FOREIGN_KEYS,
        "indexes": EXPECTED_INDEXES,
        "partial": EXPECTED_PARTIAL_INDEXES,
    }


def files_up_to(version: int, directory: Path, source: Path = RELAYER_MIGRATIONS) -> Path:
    """A migrations directory holding the source's files 001..version (a release of the relayer)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.sql"))[:version]:
        shutil.copy(path, directory / path.name)
    return directory


def _id() -> str:
    return str(uuid.uuid4())


def _write(db_path: Path, sql: str, rows: list[tuple[object, ...]]) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    conn.close()


def build_production(
    db_path: Path, *, version: int = 4, commands: int = 200, source: Path = RELAYER_MIGRATIONS
) -> dict[str, int]:
    """Production as it is today: each relayer release started on it in turn (001, then up to 002,
    ...), with the data its users wrote in between. Row counts per table at the end."""
    admin, executor, controller = _id(), _id(), _id()
    with tempfile.TemporaryDirectory(prefix="relayer-release-") as releases:
        for release in range(1, version + 1):
            start(db_path, files_up_to(release, Path(releases) / f"r{release}", source))
            if release == 1:
                _write(
                    db_path,
                    "INSERT INTO admin (id, username, password_hash, totp_secret, mfa_enabled, "
                    "executor_registered, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(admin, "ops", "argon2$hash", "TOTPSECRET", 1, 1, TS, TS)],
                )
                _write(
                    db_path,
                    "INSERT INTO devices (id, admin_id, device_id, name, role, token_hash, registered_at, "
                    "last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (executor, admin, "exec-1", "laptop", "executor", "th1", TS, TS),
                        (controller, admin, "ctrl-1", "phone", "controller", "th2", TS, TS),
                    ],
                )
                _write(
                    db_path,
                    "INSERT INTO pairing_codes (id, code, executor_id, used, expires_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(_id(), f"PAIR{i:03d}", executor, i % 2, TS, TS) for i in range(4)],
                )
                _write(
                    db_path,
                    "INSERT INTO repos (id, admin_id, path, name, created_at) VALUES (?, ?, ?, ?, ?)",
                    [(_id(), admin, f"/srv/repo{i}", f"repo{i}", TS) for i in range(3)],
                )
            command_columns = ["id", "device_id", "input", "status", "output", "created_at", "updated_at"]
            if release >= 2:
                command_columns += ["translator_model", "workload_model"]
                _write(
                    db_path,
                    "INSERT INTO device_registration_codes (id, code, created_by_device_id, used, "
                    "expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(_id(), f"REG{release}{i:03d}", controller, 0, TS, TS) for i in range(3)],
                )
            if release >= 3:
                _write(
                    db_path,
                    "INSERT INTO bootstrap_devices (token_hash, created_at) VALUES (?, ?)",
                    [(f"boot-{release}-{i}", TS) for i in range(2)],
                )
            if release >= 4:
                command_columns.append("cursor_chat_id")
            extra = {"translator_model": "small", "workload_model": "large", "cursor_chat_id": "chat-1"}
            _write(
                db_path,
                f"INSERT INTO commands ({', '.join(command_columns)}) "
                f"VALUES ({', '.join('?' for _ in command_columns)})",
                [
                    (
                        _id(),
                        controller,
                        f"task {release}/{i}",
                        "done",
                        f"output {i} " * 4,
                        TS,
                        TS,
                        *(extra[c] for c in command_columns[7:]),
                    )
                    for i in range(commands // version)
                ],
            )
    return table_counts(db_path)


def table_counts(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


def table_rows(db_path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
    finally:
        conn.close()
