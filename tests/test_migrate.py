"""The migration runner end to end through the real CLI, on realistic relayer databases."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import base_env
from tests.support.legacy import (
    MIGRATIONS,
    build_legacy_001,
    dump,
    relayer_startup,
    row_counts,
)
from tests.support.production import EXPECTED_COLUMNS

ALL = ["001_initial.sql", "002_plan_schema.sql", "003_bootstrap_devices.sql", "004_cursor_chat_id.sql"]


def columns(db: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def migrations_copy(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    for name, sql in (extra or {}).items():
        (target / name).write_text(sql)
    return target


def test_legacy_001_database_is_migrated_to_004_with_data_intact(cli, db_path: Path) -> None:
    db_path.parent.mkdir()
    counts = build_legacy_001(db_path)
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0, run.stderr + run.stdout
    assert [a["name"] for a in run.finished["applied"]] == ALL[1:]
    assert all(isinstance(a["duration_ms"], int) for a in run.finished["applied"])
    assert run.finished["schema_version"] == 4 and run.finished["outcome"] == "ok"

    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(db_path, table) == expected, table
    assert not query(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'pairing_codes'")
    kept = {k: v for k, v in counts.items() if k != "pairing_codes"}
    assert row_counts(db_path, list(kept)) == kept
    assert query(db_path, "PRAGMA foreign_key_check") == []
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'idx_one_executor'")

    ledger = query(db_path, "SELECT name, checksum, applied_by FROM _schema_migrations ORDER BY name")
    assert [r[0] for r in ledger] == ALL
    # 001 was recorded by the relayer (no checksum): the job records its checksum, and says so.
    assert ledger[0][1] == sha(MIGRATIONS / "001_initial.sql")
    assert str(ledger[0][2]).startswith("relayer (checksum recorded by relayer-job")
    assert run.finished["checksums_recorded"] == ["001_initial.sql"]
    for name, checksum, applied_by in ledger[1:]:
        assert checksum == sha(MIGRATIONS / str(name)) and str(applied_by).startswith("relayer-job")

    assert relayer_startup(db_path) == []  # the relayer's own loop finds nothing to do
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO _schema_migrations (name) VALUES ('999_relayer_style.sql')")
    conn.close()


def test_second_run_applies_nothing_and_leaves_the_file_unchanged(cli, db_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=50)
    assert cli("migrate", "--db", str(db_path)).rc == 0
    before = sha(db_path)
    again = cli("migrate", "--db", str(db_path))
    assert again.rc == 0 and again.finished["applied"] == []
    again.event("migration.none_pending")
    assert sha(db_path) == before


def test_missing_database_is_created_and_fully_migrated(cli, db_path: Path) -> None:
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0 and run.finished["new_database"] is True
    run.event("database.created")
    assert [a["name"] for a in run.finished["applied"]] == ALL
    assert relayer_startup(db_path) == []


def test_database_made_by_the_relayer_alone_is_recognised(cli, db_path: Path) -> None:
    db_path.parent.mkdir()
    assert relayer_startup(db_path) == ALL
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0 and run.finished["applied"] == [] and run.finished["adopted"] == []


def test_broken_third_statement_rolls_back_byte_for_byte(cli, db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=200)
    assert cli("migrate", "--db", str(db_path)).rc == 0
    migrations = migrations_copy(
        tmp_path,
        {
            "005_broken.sql": "ALTER TABLE commands ADD COLUMN priority INTEGER;\n"
            "UPDATE commands SET priority = 1;\n"
            "INSERT INTO no_such_table VALUES (1);\n"
        },
    )
    before_dump, before_sha = dump(db_path), sha(db_path)
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 7
    assert "005_broken.sql line 3" in run.error and "no such table" in run.error
    assert dump(db_path) == before_dump
    assert sha(db_path) == before_sha


def test_files_before_the_failing_one_stay_applied(cli, db_path: Path, tmp_path: Path) -> None:
    migrations = migrations_copy(
        tmp_path,
        {"005_ok.sql": "CREATE TABLE notes (id TEXT PRIMARY KEY);", "006_bad.sql": "SELEC 1;"},
    )
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 7 and "006_bad.sql line 1" in run.error
    names = [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations ORDER BY name")]
    assert names == [*ALL, "005_ok.sql"]
    assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'notes'")


def test_foreign_key_violation_rolls_back(cli, db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=10)
    assert cli("migrate", "--db", str(db_path)).rc == 0
    migrations = migrations_copy(
        tmp_path,
        {
            "005_orphans.sql": "PRAGMA defer_foreign_keys = ON;\n"
            "INSERT INTO repos VALUES ('r-x', 'no-such-admin', '/x', 'x', '2026-01-01T00:00:00Z');\n"
        },
    )
    before = dump(db_path)
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 7 and "foreign key" in run.error and "005_orphans.sql" in run.error
    assert dump(db_path) == before


def test_edited_applied_migration_is_refused_with_both_checksums(cli, db_path, tmp_path) -> None:
    assert cli("migrate", "--db", str(db_path)).rc == 0
    migrations = migrations_copy(tmp_path)
    edited = migrations / "003_bootstrap_devices.sql"
    old = sha(edited)
    edited.write_text(edited.read_text() + "-- a harmless comment\n")
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 5
    assert "003_bootstrap_devices.sql was edited" in run.error
    assert old in run.error and sha(edited) in run.error


def test_line_ending_only_change_is_named(cli, db_path, tmp_path) -> None:
    assert cli("migrate", "--db", str(db_path)).rc == 0
    migrations = migrations_copy(tmp_path)
    crlf = migrations / "002_plan_schema.sql"
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 5 and "only its line endings changed" in run.error


def test_database_newer_than_the_job_is_refused(cli, db_path, tmp_path) -> None:
    migrations = migrations_copy(tmp_path, {"005_future.sql": "CREATE TABLE future (id INTEGER);"})
    assert cli("migrate", "--db", str(db_path), "--migrations", str(migrations)).rc == 0
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 5 and "newer than this job" in run.error and "005_future.sql" in run.error


def test_legacy_database_without_ledger_is_adopted(cli, db_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=20, ledger=False)
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0, run.stdout
    assert run.finished["adopted"] == ["001_initial.sql"]
    assert [a["name"] for a in run.finished["applied"]] == ALL[1:]
    adopted_by = query(db_path, "SELECT applied_by FROM _schema_migrations WHERE name = '001_initial.sql'")
    assert "adopted" in str(adopted_by[0][0])
    assert relayer_startup(db_path) == []


def test_applied_but_unrecorded_file_is_refused_then_adopted_by_the_operator(cli, db_path, tmp_path) -> None:
    """The relayer ran 002 and died before recording it: re-running it would crash-loop, and the
    schema cannot prove its data statements ran, so the operator decides, once."""
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=20)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.executescript((MIGRATIONS / "002_plan_schema.sql").read_text())
    conn.close()
    before = dump(db_path)
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 5, run.stdout
    assert "002_plan_schema.sql ran but is not recorded" in run.error and "schema accept" in run.error
    assert dump(db_path) == before
    store = f"file:{tmp_path / 'store'}"
    accepted = cli("schema", "accept", "--db", str(db_path), "--store", store, "--reason", "002 ran whole")
    assert accepted.rc == 0, accepted.stdout
    assert accepted.finished["adopted"] == ["002_plan_schema.sql"]
    applied_by = query(
        db_path, "SELECT applied_by FROM _schema_migrations WHERE name = '002_plan_schema.sql'"
    )
    assert "adopted by operator: 002 ran whole" in str(applied_by[0][0])
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0, run.stdout
    assert [a["name"] for a in run.finished["applied"]] == ALL[2:]


def test_half_applied_file_matches_no_version_and_is_refused(cli, db_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=20)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TABLE pairing_codes")  # 002 stopped after one statement
    conn.close()
    before = dump(db_path)
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 5
    assert "matches no known version" in run.error or "schema drift" in run.error
    assert "nearest" in run.error and "table pairing_codes: missing" in run.error
    assert dump(db_path) == before


def test_drift_is_reported_table_by_table_and_can_be_allowed(cli, db_path) -> None:
    assert cli("migrate", "--db", str(db_path)).rc == 0
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE INDEX idx_by_hand ON commands (status)")
    conn.close()
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 5 and "schema drift" in run.error and "idx_by_hand" in run.error
    allowed = cli("migrate", "--db", str(db_path), "--allow-drift")
    assert allowed.rc == 0
    assert "table commands" in allowed.event("schema.drift")["differences"]
    status = cli("status", "--db", str(db_path), "--json")
    assert status.rc == 5 and "idx_by_hand" in str(status.stdout)


def test_drift_ignores_formatting_of_the_sql_that_created_the_schema(cli, db_path) -> None:
    """A field database created from differently formatted SQL is not drift."""
    db_path.parent.mkdir()
    sql = (MIGRATIONS / "001_initial.sql").read_text()
    sql = sql.replace("WHERE role = 'executor'", "where   ROLE='executor'").replace("TEXT", "text")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.executescript(sql.replace("    ", "\t"))
    conn.execute("CREATE TABLE _schema_migrations (name TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO _schema_migrations VALUES ('001_initial.sql')")
    conn.close()
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 0, run.stdout
    assert run.finished["drift"] == {}


def test_dry_run_reports_and_leaves_the_database_untouched(cli, db_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=30)
    before = sha(db_path)
    run = cli("migrate", "--db", str(db_path), "--dry-run")
    assert run.rc == 0 and run.finished["dry_run"] is True
    # Said as what would happen: nothing is reported as applied, the live version stays.
    assert run.finished["would_apply"] == ALL[1:] and "applied" not in run.finished
    assert run.finished["schema_version"] == 1 and run.finished["schema_version_after"] == 4
    names = [e["event"] for e in run.events]
    assert not [n for n in names if n in ("migration.applied", "migration.adopted", "migration.started")]
    assert [e["name"] for e in run.events if e["event"] == "migration.would_apply"] == ALL[1:]
    assert sha(db_path) == before
    assert [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations")] == ALL[:1]


def test_dry_run_catches_a_migration_that_fails_only_on_real_data(cli, db_path, tmp_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=5)
    migrations = migrations_copy(
        tmp_path, {"005_not_null.sql": "ALTER TABLE commands ADD COLUMN owner TEXT NOT NULL;"}
    )
    before = sha(db_path)
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations), "--dry-run")
    assert run.rc == 7 and "005_not_null.sql" in run.error
    assert sha(db_path) == before


def test_status_lists_applied_and_pending(cli, db_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=5)
    run = cli("status", "--db", str(db_path), "--json")
    assert run.rc == 0
    import json

    report = json.loads(run.stdout)
    assert report["pending"] == ALL[1:] and report["schema_version"] == 1
    assert report["journal_mode"] == "delete" and report["size_bytes"] > 0
    text = cli("status", "--db", str(db_path))
    assert "pending         002_plan_schema.sql" in text.stdout


def test_not_a_database_is_exit_5(cli, tmp_path) -> None:
    bogus = tmp_path / "relayer.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    run = cli("migrate", "--db", str(bogus))
    assert run.rc == 5 and "not a database" in run.error and str(bogus) in run.error


@pytest.mark.parametrize(
    "ledger_sql", ["CREATE TABLE _schema_migrations (id INTEGER PRIMARY KEY, name TEXT)"]
)
def test_ledger_with_wrong_shape_is_exit_5(cli, db_path, ledger_sql: str) -> None:
    db_path.parent.mkdir()
    conn = sqlite3.connect(db_path)
    conn.execute(ledger_sql)
    conn.close()
    run = cli("migrate", "--db", str(db_path))
    assert run.rc == 5 and "ledger problem" in run.error


def test_env_var_names_the_relayer_uses_are_honoured(cli, tmp_path) -> None:
    db = tmp_path / "viaurl.db"
    run = cli("migrate", env=base_env(DATABASE_URL=f"sqlite:/{db}"))  # sqlite://abs/path
    assert run.rc == 0 and db.exists()
    other = tmp_path / "viapath.db"
    run = cli("migrate", env=base_env(DATABASE_PATH=str(other), DATABASE_URL=f"sqlite:{db}"))
    assert run.rc == 0 and other.exists()


def test_status_shows_the_last_snapshot(cli, db_path, tmp_path) -> None:
    import json

    store = f"file:{tmp_path / 'store'}"
    assert cli("migrate", "--db", str(db_path)).rc == 0
    none_yet = json.loads(cli("status", "--db", str(db_path), "--json", "--store", store).stdout)
    assert str(none_yet["last_snapshot"]).startswith("none in file://")
    snapshot_id = cli("snapshot", "--db", str(db_path), "--store", store).finished["snapshot_id"]
    report = json.loads(cli("status", "--db", str(db_path), "--json", "--store", store).stdout)
    assert report["last_snapshot"]["id"] == snapshot_id and report["last_snapshot"]["schema_version"] == 4


REBUILD_DEVICES = """CREATE TABLE devices_new (
    id TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admin(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    name TEXT,
    role TEXT NOT NULL CHECK (role IN ('executor', 'controller')),
    token_hash TEXT,
    registered_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    label TEXT,
    UNIQUE (admin_id, device_id)
);
INSERT INTO devices_new SELECT id, admin_id, device_id, name, role, token_hash, registered_at,
    last_seen_at, NULL FROM devices;
DROP TABLE devices;
ALTER TABLE devices_new RENAME TO devices;
CREATE UNIQUE INDEX idx_one_executor ON devices (admin_id) WHERE role = 'executor';
"""


def test_table_rebuild_does_not_cascade_delete_child_rows(cli, db_path, tmp_path) -> None:
    """The 12-step rebuild drops the parent table: with foreign keys on, that would silently
    delete every command. The runner turns them off for the file and checks them before COMMIT."""
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=250)
    assert cli("migrate", "--db", str(db_path)).rc == 0
    migrations = migrations_copy(tmp_path, {"005_rebuild_devices.sql": REBUILD_DEVICES})
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 0, run.stdout
    assert row_counts(db_path, ["commands", "devices"]) == {"commands": 250, "devices": 2}
    assert "label" in [c[0] for c in columns(db_path, "devices")]
    assert query(db_path, "PRAGMA foreign_key_check") == []
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)  # a fresh connection's default
    conn.close()


def test_rebuild_that_orphans_rows_is_rolled_back(cli, db_path, tmp_path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=20)
    assert cli("migrate", "--db", str(db_path)).rc == 0
    lossy = REBUILD_DEVICES.replace("FROM devices;", "FROM devices WHERE role = 'executor';")
    migrations = migrations_copy(tmp_path, {"005_lossy.sql": lossy})
    before = dump(db_path)
    run = cli("migrate", "--db", str(db_path), "--migrations", str(migrations))
    assert run.rc == 7 and "foreign key violations" in run.error
    assert dump(db_path) == before
