"""Discovery and lint of migration files: every bad file is a usage error (exit 2) naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.errors import UsageError
from job.migrations import discover
from tests.test_migrate import migrations_copy


def write(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    directory = tmp_path / "m"
    directory.mkdir()
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"001_a.sql": "SELECT 1;", "notes.sql": "SELECT 1;"}, "notes.sql: migration files must be named"),
        ({"001_a.sql": "SELECT 1;", "001_b.sql": "SELECT 1;"}, "also used by 001_a.sql"),
        ({"001_a.sql": "SELECT 1;", "1000_b.sql": "SELECT 1;"}, "different widths"),
        ({"001_a.sql": b"SELECT '\xff';"}, "001_a.sql line 1: not valid UTF-8"),
        ({"001_a.sql": b"\xef\xbb\xbfSELECT 1;"}, "001_a.sql: starts with a UTF-8 byte-order mark"),
        ({"001_a.sql": "CREATE TABLE t (x);\n\nBEGIN;\n"}, "001_a.sql line 3: BEGIN is not allowed"),
        ({"001_a.sql": "SELECT 1;\nCOMMIT;"}, "line 2: COMMIT is not allowed"),
        ({"001_a.sql": "SELECT 1;\nend transaction;"}, "line 2: END TRANSACTION is not allowed"),
        ({"001_a.sql": "rollback;"}, "line 1: ROLLBACK is not allowed"),
        ({"001_a.sql": "SAVEPOINT x;"}, "line 1: SAVEPOINT is not allowed"),
        ({"001_a.sql": "-- tidy up\nVACUUM;"}, "line 2: VACUUM is not allowed"),
        ({"001_a.sql": "ATTACH 'x.db' AS x;"}, "line 1: ATTACH is not allowed"),
        ({"001_a.sql": "PRAGMA foreign_keys = OFF;"}, "PRAGMA foreign_keys is not allowed"),
        ({"001_a.sql": "pragma main.journal_mode=wal;"}, "PRAGMA journal_mode is not allowed"),
        ({}, "no *.sql migrations"),
    ],
)
def test_bad_migration_directories_are_usage_errors(tmp_path: Path, files, expected: str) -> None:
    directory = write(tmp_path, files)
    with pytest.raises(UsageError) as caught:
        discover(directory)
    assert expected in caught.value.message


def test_trigger_bodies_and_strings_are_not_mistaken_for_transactions(tmp_path: Path) -> None:
    directory = write(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE t (x TEXT);\nCREATE TABLE log (x TEXT);\n"
            "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN\n"
            "  INSERT INTO log VALUES ('BEGIN; COMMIT;');\nEND;\n"
            "/* ROLLBACK; */ INSERT INTO t VALUES ('a;b');\n",
        },
    )
    [migration] = discover(directory)
    assert [s.line for s in migration.statements] == [1, 2, 3, 6]


def test_order_is_numeric_and_equals_file_name_order(tmp_path: Path) -> None:
    directory = write(
        tmp_path, {"010_c.sql": "SELECT 1;", "002_b.sql": "SELECT 1;", "001_a.sql": "SELECT 1;"}
    )
    assert [m.name for m in discover(directory)] == ["001_a.sql", "002_b.sql", "010_c.sql"]


def test_cli_reports_a_bad_file_with_exit_2(cli, tmp_path: Path) -> None:
    migrations = migrations_copy(tmp_path, {"005_x.sql": "BEGIN;\nSELECT 1;\n"})
    db = tmp_path / "r.db"
    run = cli("migrate", "--db", str(db), "--migrations", str(migrations))
    assert run.rc == 2 and "005_x.sql line 1: BEGIN is not allowed" in run.error
    assert not db.exists()  # nothing was created before the files were validated


def test_shipped_migrations_are_lf_only() -> None:
    from tests.support.legacy import MIGRATIONS

    for path in MIGRATIONS.glob("*.sql"):
        assert b"\r" not in path.read_bytes(), path
