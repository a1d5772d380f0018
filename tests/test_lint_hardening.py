"""The migration lint judges statements as SQLite parses them, splitting is linear and bounded by the
deadline, odd directory entries are refused, and a rollback is proven before it is claimed."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from job import database, deploy, ledger
from job.config import load
from job.deadline import Deadline
from job.errors import DatabaseProblem, DeadlineExceeded, JobError, MigrationFailed, UsageError
from job.migrate import apply_one
from job.migrations import Migration, checksum_of, discover
from job.sqltext import lint_tokens, split_statements
from tests.support.legacy import MIGRATIONS, build_legacy_001
from tests.test_migrate import migrations_copy


def one_file(tmp_path: Path, sql: str, name: str = "001_a.sql") -> Path:
    directory = tmp_path / "m"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql)
    return directory


# Each spelling really sets the pragma in SQLite (checked below), and each must be refused.
PRAGMA_SPELLINGS = [
    ("PRAGMA 'journal_mode' = OFF", "journal_mode", "off"),
    ("PRAGMA [main] . [journal_mode] = memory", "journal_mode", "memory"),
    ("PRAGMA/* c */`journal_mode`/* c */=/* c */off", "journal_mode", "off"),
    ('pragma "main"."JOURNAL_MODE"(\'wal\')', "journal_mode", "wal"),
    ("PRAGMA main . 'journal_mode' (OFF)", "journal_mode", "off"),
    ("EXPLAIN PRAGMA writable_schema = 1", "writable_schema", 1),
    ('PrAgMa "writable_schema"=ON', "writable_schema", 1),
    ("PRAGMA 'main'.'synchronous' = 0", "synchronous", 0),
    ("EXPLAIN QUERY PLAN PRAGMA locking_mode = exclusive", "locking_mode", "exclusive"),
    ('PRAGMA "main"."locking_mode"(EXCLUSIVE)', "locking_mode", "exclusive"),
    ("PRAGMA [schema_version] = 7", "schema_version", 7),
    ("PRAGMA\n\t-- off\n  foreign_keys\n=\nOFF", "foreign_keys", 0),
]


@pytest.mark.parametrize(("statement", "pragma", "effect"), PRAGMA_SPELLINGS)
def test_forbidden_pragmas_are_refused_in_every_spelling_sqlite_accepts(
    tmp_path: Path, statement: str, pragma: str, effect: object
) -> None:
    probe = sqlite3.connect(tmp_path / "probe.db", isolation_level=None)
    try:
        probe.execute("PRAGMA foreign_keys = ON")
        probe.execute("CREATE TABLE t (x)")
        probe.execute(statement).fetchall()
        assert probe.execute(f"PRAGMA main.{pragma}").fetchone()[0] == effect  # SQLite reads it so
    finally:
        probe.close()
    directory = one_file(tmp_path, f"CREATE TABLE t (x);\n{statement};\nSELECT 1;\n")
    with pytest.raises(UsageError) as caught:
        discover(directory)
    assert f"001_a.sql line 2: PRAGMA {pragma} is not allowed" in caught.value.message


@pytest.mark.parametrize(
    ("statement", "what"),
    [
        ("  commit  /* done */", "COMMIT"),
        ("End\n  Transaction", "END TRANSACTION"),
        ("/* undo */ rollback TO sp", "ROLLBACK"),
        ("Savepoint sp", "SAVEPOINT"),
        ("release sp", "RELEASE (SAVEPOINT)"),
        ("vacuum INTO 'copy.db'", "VACUUM"),
        ("attach DATABASE 'other.db' AS other", "ATTACH"),
        ("EXPLAIN begin immediate", "BEGIN"),
        ('"COMMIT"', "COMMIT"),
    ],
)
def test_transaction_statements_are_refused_in_any_case_and_spacing(
    tmp_path: Path, statement: str, what: str
) -> None:
    directory = one_file(tmp_path, f"SELECT 1;\n{statement};\n")
    with pytest.raises(UsageError) as caught:
        discover(directory)
    assert f"line 2: {what} is not allowed" in caught.value.message


LOOKALIKES = """\
CREATE TABLE "commit" (x TEXT);
CREATE TABLE [begin] (y TEXT);
INSERT INTO "commit" VALUES ('PRAGMA journal_mode = OFF; COMMIT;');
CREATE TRIGGER keep AFTER INSERT ON "commit" BEGIN
  INSERT INTO [begin] VALUES ('end');
END;
PRAGMA user_version = 5;
PRAGMA defer_foreign_keys = ON;
PRAGMA main.journal_size_limit = 1048576;
PRAGMA foreign_key_check;
SELECT 1 /* ROLLBACK; VACUUM; */;
"""


def test_names_and_strings_that_look_like_forbidden_words_pass_and_run(tmp_path: Path) -> None:
    [migration] = discover(one_file(tmp_path, LOOKALIKES))
    assert [s.line for s in migration.statements] == [1, 2, 3, 4, 7, 8, 9, 10, 11]
    conn = database.connect(tmp_path / "r.db", create=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in migration.statements:
            conn.execute(statement.sql).fetchall()
        assert conn.in_transaction
        conn.execute("COMMIT")
    finally:
        conn.close()


FUZZ_PIECES = [
    ";",
    " ",
    "\n",
    "CREATE",
    "temp",
    "TEMPORARY",
    "trigger",
    "BEGIN",
    "END",
    "end",
    "EXPLAIN",
    "x",
    "$end",
    "end$",
    "1end",
    "#end",
    "'a;b'",
    "'it''s'",
    '"q;"',
    "`b;`",
    "[c;]",
    "-- c;\n",
    "/* ; */",
    "-",
    "/",
    "select",
    "'open",
    "/* open",
    "[open",
    "é",
    "\u00a0",
    "\v",
    "CASE",
]


def test_splitting_agrees_with_sqlite_complete_statement() -> None:
    """A statement ends exactly where sqlite3_complete() says: random scripts of the tokens that
    matter (trigger keywords, quotes, comments, unterminated ones), seeded for repeatability."""
    rng = random.Random(8)
    for _ in range(3000):
        sql = "".join(rng.choice(FUZZ_PIECES) + rng.choice(["", " "]) for _ in range(rng.randint(0, 20)))
        expected, start = [], 0
        for index, char in enumerate(sql):
            if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
                expected.append(sql[start : index + 1])
                start = index + 1
        expected.append(sql[start:])
        significant = [
            c.strip(" \t\n\f\r") for c in expected if [t.text for t in lint_tokens(c)] not in ([], [";"])
        ]
        assert [s.sql for s in split_statements(sql)] == significant, repr(sql)


def test_splitting_checks_the_deadline_inside_one_huge_statement() -> None:
    body = "  INSERT INTO log VALUES ('x');\n" * 5000
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise DeadlineExceeded("out of time")

    with pytest.raises(DeadlineExceeded):
        list(split_statements(f"CREATE TRIGGER t AFTER INSERT ON x BEGIN\n{body}END;\n", check))


def test_discover_stops_at_the_deadline(tmp_path: Path) -> None:
    directory = one_file(tmp_path, "CREATE TABLE t (x);\n" * 1000)
    expired = Deadline(1, started=time.monotonic() - 10)
    with pytest.raises(DeadlineExceeded) as caught:
        discover(directory, expired)
    assert caught.value.exit_code == 9 and "001_a.sql" in caught.value.message
    assert len(discover(directory, Deadline(60))[0].statements) == 1000


def make_entry(directory: Path, kind: str, name: str) -> None:
    path = directory / name
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to(directory / "gone.sql")
    elif kind == "symlink to a directory":
        (directory / "sub").mkdir()
        path.symlink_to(directory / "sub")
    elif kind == "fifo":
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "symlink to a directory", "fifo"])
@pytest.mark.parametrize("name", ["005_x.sql", "005_x.SQL"])
def test_a_migration_entry_that_is_not_a_file_is_refused(tmp_path: Path, kind: str, name: str) -> None:
    directory = migrations_copy(tmp_path)
    make_entry(directory, kind, name)
    with pytest.raises(UsageError) as caught:
        discover(directory)
    assert str(directory / name) in caught.value.message


def test_a_symlink_to_a_migration_file_is_read_like_the_relayer_does(tmp_path: Path) -> None:
    directory = migrations_copy(tmp_path)
    (tmp_path / "005_x.sql").write_text("CREATE TABLE extra (x);\n")
    (directory / "005_x.sql").symlink_to(tmp_path / "005_x.sql")
    assert discover(directory)[-1].name == "005_x.sql"


def test_cli_refuses_a_directory_named_like_a_migration(cli, tmp_path: Path) -> None:
    directory = migrations_copy(tmp_path)
    (directory / "005_later.sql").mkdir()
    db = tmp_path / "data" / "relayer.db"
    run = cli("migrate", "--db", str(db), "--migrations", str(directory))
    assert run.rc == 2 and "005_later.sql: is a directory" in run.error
    assert not db.exists()


def unlinted(number: int, name: str, sql: str, directory: Path) -> Migration:
    """A migration as the runner gets it, without the lint: a stand-in for a hole in it."""
    (directory / name).write_text(sql)
    return Migration(number, name, directory / name, checksum_of(sql.encode()), tuple(split_statements(sql)))


UNDOABLE_WRITES = (
    "DELETE FROM commands;\n"
    "INSERT INTO commands SELECT * FROM commands;\n"
    "CREATE TABLE filler (x BLOB);\n"
    "INSERT INTO filler SELECT randomblob(900) FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL "
    "SELECT n + 1 FROM c WHERE n < 3000) SELECT n FROM c);\n"
)


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_legacy_001(db, commands=300)
    with database.opened(db) as conn:
        ledger.prepare(conn)
    return db


def apply_unlinted(db: Path, migration: Migration) -> JobError:
    with database.opened(db) as conn, pytest.raises(JobError) as caught:
        apply_one(conn, migration, Deadline(60))
    return caught.value


def test_a_rollback_that_cannot_undo_the_file_is_not_reported_as_clean(
    tmp_path: Path, legacy_db: Path
) -> None:
    sql = "PRAGMA 'journal_mode' = OFF;\n" + UNDOABLE_WRITES + "INSERT INTO no_such_table VALUES (1);\n"
    error = apply_unlinted(legacy_db, unlinted(5, "005_x.sql", sql, tmp_path))
    assert isinstance(error, DatabaseProblem) and error.exit_code == 5
    assert "005_x.sql failed (line 6: no such table: no_such_table)" in error.message
    assert "journal mode from delete to off" in error.message and "restore" in error.message
    assert "\n" not in error.message and "as it was" not in error.message


def test_a_file_that_commits_itself_stops_at_once_with_exit_5(tmp_path: Path, legacy_db: Path) -> None:
    sql = "CREATE TABLE first (x);\nCOMMIT;\nCREATE TABLE second (x);\n"
    error = apply_unlinted(legacy_db, unlinted(5, "005_x.sql", sql, tmp_path))
    assert error.exit_code == 5 and "005_x.sql line 2 ended the migration's transaction" in error.message
    with database.opened(legacy_db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "second" not in tables  # nothing ran after it


def test_an_ordinary_failure_is_still_a_verified_clean_rollback(tmp_path: Path, legacy_db: Path) -> None:
    before = legacy_db.read_bytes()
    error = apply_unlinted(
        legacy_db, unlinted(5, "005_x.sql", UNDOABLE_WRITES + "INSERT INTO nope VALUES (1);\n", tmp_path)
    )
    assert isinstance(error, MigrationFailed) and error.exit_code == 7
    assert legacy_db.read_bytes() == before


def test_deploy_names_the_pre_migrate_snapshot_when_a_rollback_is_unverified(
    tmp_path: Path, legacy_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = discover(MIGRATIONS)
    bad = unlinted(
        5, "005_x.sql", "PRAGMA journal_mode = MEMORY;\n" + UNDOABLE_WRITES + "SELECT nope;\n", tmp_path
    )
    monkeypatch.setattr(deploy, "discover", lambda *_: [*migrations, bad])
    config = load({"db": str(legacy_db), "store": f"file:{tmp_path / 'store'}"}, {})
    with pytest.raises(DatabaseProblem) as caught:
        deploy.run(config)
    [snapshot_id] = [p.name for p in (tmp_path / "store" / "snapshots").iterdir()]
    assert caught.value.exit_code == 5 and caught.value.facts["snapshot_id"] == snapshot_id
    assert f"RESTORE_SNAPSHOT={snapshot_id}" in caught.value.message
