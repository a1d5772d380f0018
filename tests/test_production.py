"""The user's production database, built by a model of the relayer's own start-up runner from the
relayer's own files, through status, deploy, gate, preflight and schema accept. Afterwards the
relayer's runner must find nothing to do, and every row must still be there."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import base_env, run_cli
from tests.support.legacy import MIGRATIONS, dump
from tests.support.production import (
    actual_schema,
    build_production,
    expected_schema,
    files_up_to,
    table_counts,
    table_rows,
)
from tests.support.relayer_model import RELAYER_MIGRATIONS, StartAborted, start, start_and_die
from tests.support.service import gate, relayer_holding_the_lock
from tests.test_migrate import ALL, migrations_copy

DATA_TABLES = ["admin", "devices", "device_registration_codes", "commands", "repos", "bootstrap_devices"]


def env_for(db: Path, store: Path, **extra: str) -> dict[str, str]:
    return base_env(DATABASE_PATH=str(db), SNAPSHOT_STORE=f"file:{store}", **extra)


def offdisk_env(store: Path, **extra: str) -> dict[str, str]:
    """Render's pre-deploy command: no disk, the same store."""
    return base_env(
        DATABASE_PATH="/nonexistent-disk/relayer.db",
        DISK_MOUNT_PATH="/nonexistent-disk",
        SNAPSHOT_STORE=f"file:{store}",
        **extra,
    )


def ledger(db: Path) -> list[tuple[object, ...]]:
    """(name, checksum, applied_by) rows; None for the job's columns the relayer's table lacks."""
    conn = sqlite3.connect(db)
    try:
        if "checksum" not in [r[1] for r in conn.execute("PRAGMA table_info(_schema_migrations)")]:
            return [
                (r[0], None, None) for r in conn.execute("SELECT name FROM _schema_migrations ORDER BY name")
            ]
        return conn.execute(
            "SELECT name, checksum, applied_by FROM _schema_migrations ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in statements:
        conn.execute(sql)
    conn.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_production(db)
    return db


def test_migrations_build_the_relayers_schema_at_every_version(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    assert run_cli("migrate", "--db", str(ours)).rc == 0
    start(theirs)
    assert actual_schema(ours) == expected_schema()  # the fixture written from the facts
    assert actual_schema(theirs) == expected_schema()
    for version in range(1, 5):
        job_files = files_up_to(version, tmp_path / f"ours-{version}", MIGRATIONS)
        relayer_files = files_up_to(version, tmp_path / f"theirs-{version}", RELAYER_MIGRATIONS)
        by_job, by_relayer = tmp_path / f"job-{version}.db", tmp_path / f"relayer-{version}.db"
        migrated = run_cli("migrate", "--db", str(by_job), "--migrations", str(job_files))
        assert migrated.rc == 0, migrated.stdout
        start(by_relayer, relayer_files)
        for db in (by_job, by_relayer):
            report = run_cli("status", "--json", "--db", str(db), "--migrations", str(job_files))
            assert report.rc == 0, report.stdout + report.stderr
            status = json.loads(report.stdout)
            assert status["drift"] == {} and status["schema_version"] == version and status["pending"] == []
            for files in (job_files, relayer_files):
                assert start(db, files) == []  # the relayer's own runner finds nothing to do
    assert run_cli("migrations", "compare", str(RELAYER_MIGRATIONS), str(MIGRATIONS)).rc == 0


def test_production_at_004_passes_status_deploy_gate_and_preflight(prod: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = env_for(prod, store)
    counts, rows = table_counts(prod), {t: table_rows(prod, t) for t in DATA_TABLES}
    assert [r[1] for r in ledger(prod)] == [None] * 4  # the relayer keeps no checksum

    status = run_cli("status", "--json", env=env)
    assert status.rc == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["schema_version"] == 4 and report["pending"] == [] and report["drift"] == {}
    assert report["checksums_to_record"] == ALL

    deployed = run_cli("deploy", env=env)
    assert deployed.rc == 0, deployed.stdout
    assert deployed.finished["applied"] == [] and deployed.finished["checksums_recorded"] == ALL
    assert deployed.finished["snapshot_id"] and deployed.finished["post_migrate_snapshot_id"]
    for name, checksum, applied_by in ledger(prod):
        assert checksum == sha(MIGRATIONS / str(name))
        assert str(applied_by).startswith("relayer (checksum recorded by relayer-job")
    assert table_counts(prod) == counts
    assert {t: table_rows(prod, t) for t in DATA_TABLES} == rows  # mfa columns and their data too
    assert start(prod, MIGRATIONS) == [] and start(prod, RELAYER_MIGRATIONS) == []

    again = run_cli("deploy", env=env)
    assert again.rc == 0 and again.finished["checksums_recorded"] == []
    assert again.finished["snapshot_unchanged"] is True

    preflight = run_cli("preflight", env=offdisk_env(store))
    assert preflight.rc == 0, preflight.stdout
    assert preflight.finished["would_apply"] == []
    assert run_cli("migrate", "--dry-run", env=env).rc == 0
    assert run_cli("status", env=env).rc == 0


def test_gate_starts_the_relayer_on_production(service) -> None:
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_production(service["db"])
    rows = {t: table_rows(service["db"], t) for t in DATA_TABLES}
    result, _ = gate(service)
    assert result.rc == 0, result.stdout + result.stderr
    started = json.loads(service["marker"].read_text())
    assert started["ledger"] == ALL and "cursor_chat_id" in started["columns"]
    assert {t: table_rows(service["db"], t) for t in DATA_TABLES} == rows
    assert start(service["db"], MIGRATIONS) == []


def test_production_at_002_gets_003_and_004(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    counts = build_production(db, version=2)
    before = {t: table_rows(db, t) for t in DATA_TABLES if t != "bootstrap_devices"}
    env = env_for(db, tmp_path / "store")
    status = run_cli("status", "--json", env=env)
    assert status.rc == 0 and json.loads(status.stdout)["pending"] == ALL[2:]
    deployed = run_cli("deploy", env=env)
    assert deployed.rc == 0, deployed.stdout
    assert [a["name"] for a in deployed.finished["applied"]] == ALL[2:]
    assert deployed.finished["checksums_recorded"] == ALL[:2]
    assert table_counts(db) == {**counts, "bootstrap_devices": 0, "_schema_migrations": 4}
    after = {t: table_rows(db, t) for t in before}
    assert after["commands"] == sorted([(*row, None) for row in before["commands"]], key=repr)  # + chat id
    assert {t: v for t, v in after.items() if t != "commands"} == {
        t: v for t, v in before.items() if t != "commands"
    }
    assert start(db, MIGRATIONS) == [] and start(db, RELAYER_MIGRATIONS) == []
    assert actual_schema(db) == expected_schema()


def test_relayer_died_half_way_through_002_is_reported_not_guessed(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_production(db, version=1)
    assert start_and_die(db, RELAYER_MIGRATIONS, die_after=3) == -9  # 002's first three statements
    with pytest.raises(StartAborted, match="duplicate column name: translator_model"):
        start(db, RELAYER_MIGRATIONS)  # the relayer itself now crash-loops
    before = dump(db)
    env = env_for(db, tmp_path / "store")
    for command in (["status"], ["migrate"], ["deploy"], ["migrate", "--dry-run"]):
        run = run_cli(*command, env=env)
        assert run.rc == 5, (command, run.stdout)
        assert "the ledger says 001_initial.sql" in run.error
        assert "nearest known version: 002_plan_schema.sql" in run.error
        assert "column workload_model missing" in run.error  # what 002 still lacks
        assert (
            "table pairing_codes: missing" in run.error and "unexpected column translator_model" in run.error
        )
        assert "restore the snapshot" in run.error and "schema accept" in run.error
        assert dump(db) == before, command


def test_relayer_died_after_002_ran_whole_is_adopted_only_by_the_operator(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_production(db, version=1)
    assert start_and_die(db, RELAYER_MIGRATIONS, die_after=4) == -9  # all of 002, not its ledger row
    env = env_for(db, tmp_path / "store")
    before = dump(db)
    refused = run_cli("deploy", env=env)
    assert refused.rc == 5 and "002_plan_schema.sql ran but is not recorded" in refused.error
    assert dump(db) == before
    accepted = run_cli("schema", "accept", "--reason", "the 02-03 crash: 002 finished", env=env)
    assert accepted.rc == 0, accepted.stdout
    assert accepted.finished["adopted"] == ["002_plan_schema.sql"]
    deployed = run_cli("deploy", env=env)
    assert deployed.rc == 0, deployed.stdout
    assert [a["name"] for a in deployed.finished["applied"]] == ALL[2:]
    assert start(db, RELAYER_MIGRATIONS) == [] and start(db, MIGRATIONS) == []
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    assert status["acceptances"][0]["adopted"] == ["002_plan_schema.sql"]


def test_half_applied_file_that_can_finish_is_accepted_once_then_completed(tmp_path: Path) -> None:
    """002 died after DROP TABLE IF EXISTS and CREATE TABLE IF NOT EXISTS: re-running the file is
    safe, so accepting the difference once lets the deploy finish it."""
    db = tmp_path / "relayer.db"
    build_production(db, version=1)
    assert start_and_die(db, RELAYER_MIGRATIONS, die_after=2) == -9
    env = env_for(db, tmp_path / "store")
    assert run_cli("deploy", env=env).rc == 5
    assert run_cli("schema", "accept", "--reason", "002 interrupted; safe to re-run", env=env).rc == 0
    deployed = run_cli("deploy", env=env)
    assert deployed.rc == 0, deployed.stdout
    assert [a["name"] for a in deployed.finished["applied"]] == ALL[1:]
    assert deployed.finished["drift"] == {}
    assert actual_schema(db) == expected_schema()
    assert start(db, RELAYER_MIGRATIONS) == []


def test_a_migration_the_relayer_applied_on_its_own(prod: Path, tmp_path: Path) -> None:
    newer = tmp_path / "relayer-005"
    shutil.copytree(RELAYER_MIGRATIONS, newer)
    (newer / "005_repo_notes.sql").write_text("alter table repos add column notes text;\n")
    assert start(prod, newer) == ["005_repo_notes.sql"]
    env = env_for(prod, tmp_path / "store")
    for command in ("status", "deploy"):
        run = run_cli(command, env=env)
        assert run.rc == 5 and "newer than this job" in run.error and "005_repo_notes.sql" in run.error
    ours = migrations_copy(tmp_path, {"005_repo_notes.sql": "ALTER TABLE repos ADD COLUMN notes TEXT;\n"})
    deployed = run_cli("deploy", "--migrations", str(ours), env=env)
    assert deployed.rc == 0, deployed.stdout
    assert deployed.finished["checksums_recorded"] == [*ALL, "005_repo_notes.sql"]
    assert start(prod, ours) == [] and start(prod, newer) == []


def test_schema_accept_covers_exactly_the_recorded_difference(prod: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = env_for(prod, store)
    assert run_cli("deploy", env=env).rc == 0
    execute(prod, "CREATE INDEX idx_by_hand ON commands (status)")
    assert run_cli("status", env=env).rc == 5

    assert run_cli("schema", "accept", env=env).rc == 2  # a reason is required
    accepted = run_cli("schema", "accept", "--reason", "index added during the March incident", env=env)
    assert accepted.rc == 0, accepted.stdout
    assert accepted.finished["acceptance_id"] == 1 and accepted.finished["snapshot_id"]
    assert accepted.finished["accepted"] == {"table commands": ["unexpected index idx_by_hand"]}
    manifest = json.loads(
        (store / "snapshots" / accepted.finished["snapshot_id"] / "manifest.json").read_text()
    )
    assert manifest["reason"] == "pre-accept"

    status = run_cli("status", "--json", env=env)
    assert status.rc == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["drift_accepted_by"] == [1]
    assert report["acceptances"][0]["reason"] == "index added during the March incident"
    assert report["acceptances"][0]["active"] is True and report["acceptances"][0]["live_fingerprint"]
    assert re.search(r"^acceptance #1 +\S+ +active +'index added", run_cli("status", env=env).stdout, re.M)

    for command in (["deploy"], ["migrate"], ["gate", "--", "true"]):
        run = run_cli(*command, env=env)
        assert run.rc == 0, (command, run.stdout)
        assert "acceptance #1" in run.event("schema.drift_accepted")["acceptances"][0]
    preflight = run_cli("preflight", env=offdisk_env(store))
    assert preflight.rc == 0, preflight.stdout  # sees the acceptance inside the post-accept snapshot
    preflight.event("schema.drift_would_be_accepted")  # the gate would accept it

    again = run_cli("schema", "accept", "--reason", "again", env=env)
    assert again.rc == 0 and again.finished["acceptance_id"] is None  # already covered

    execute(prod, "CREATE INDEX idx_second ON repos (name)")  # another, different drift
    for command in (["status"], ["deploy"], ["migrate"]):
        run = run_cli(*command, env=env)
        assert run.rc == 5 and "idx_second" in run.error and "idx_by_hand" not in run.error, command
    assert run_cli("snapshot", env=env).rc == 0
    assert run_cli("preflight", env=offdisk_env(store)).rc == 5
    assert run_cli("preflight", "--allow-drift", env=offdisk_env(store)).rc == 0
    assert run_cli("preflight", env=offdisk_env(store, ALLOW_DRIFT="1")).rc == 0
    overridden = run_cli("deploy", env={**env, "ALLOW_DRIFT": "true"})
    assert overridden.rc == 0 and overridden.event("schema.drift")["allowed"] is True
    assert run_cli("deploy", env={**env, "ALLOW_DRIFT": "maybe"}).rc == 2

    execute(prod, "DROP INDEX idx_second")
    assert run_cli("status", env=env).rc == 0
    revoked = run_cli("schema", "accept", "--revoke", "1", env=env)
    assert revoked.rc == 0 and revoked.finished["revoked"] == 1
    after = run_cli("status", "--json", env=env)
    assert after.rc == 5 and "idx_by_hand" in after.stdout
    assert json.loads(after.stdout)["acceptances"][0]["active"] is False  # kept for the audit trail
    missing = run_cli("schema", "accept", "--revoke", "1", env=env)
    assert missing.rc == 2 and "no active acceptance with that id" in missing.error


REBUILD_REPOS = """
CREATE TABLE repos_new (
    id TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admin(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    name TEXT,
    created_at TEXT NOT NULL,
    owner TEXT
);
INSERT INTO repos_new SELECT id, admin_id, path, name, created_at, owner FROM repos;
DROP TABLE repos;
ALTER TABLE repos_new RENAME TO repos;
"""


def test_later_migrations_keep_an_acceptance_unless_they_touch_the_accepted_items(
    prod: Path, tmp_path: Path
) -> None:
    env = env_for(prod, tmp_path / "store")
    execute(prod, "ALTER TABLE repos ADD COLUMN notes TEXT", "UPDATE repos SET notes = 'keep me'")
    assert run_cli("schema", "accept", "--reason", "notes column added by hand", env=env).rc == 0

    later = {
        "005_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);",
        "006_repo_owner.sql": "ALTER TABLE repos ADD COLUMN owner TEXT;",  # same table, not the item
    }
    deployed = run_cli("deploy", "--migrations", str(migrations_copy(tmp_path / "a", later)), env=env)
    assert deployed.rc == 0, deployed.stdout
    assert [a["name"] for a in deployed.finished["applied"]] == ["005_audit.sql", "006_repo_owner.sql"]
    assert deployed.event("schema.drift_accepted")

    rebuild = migrations_copy(tmp_path / "b", {**later, "007_rebuild_repos.sql": REBUILD_REPOS})
    before = dump(prod)
    blocked = run_cli("deploy", "--migrations", str(rebuild), env=env)
    assert blocked.rc == 5, blocked.stdout  # it would silently drop the accepted column's data
    assert "007_rebuild_repos.sql" in blocked.error and "table repos/column notes" in blocked.error
    assert "rolled back" in blocked.error and "accepted as it was" in blocked.error
    assert [r[0] for r in ledger(prod)][-1] == "006_repo_owner.sql"
    assert dump(prod) == before


def test_an_accepted_index_survives_migrations_of_its_table(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_production(db, version=2)
    env = env_for(db, tmp_path / "store")
    execute(db, "CREATE INDEX idx_by_hand ON commands (status)")
    assert run_cli("schema", "accept", "--reason", "hand index", env=env).rc == 0
    deployed = run_cli("deploy", env=env)  # 004 adds a column to commands: the index is untouched
    assert deployed.rc == 0, deployed.stdout
    assert [a["name"] for a in deployed.finished["applied"]] == ALL[2:]
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    assert status["drift"] == {"table commands": ["unexpected index idx_by_hand"]}
    assert status["drift_uncovered"] == {} and status["exit_code"] == 0

    replaced = migrations_copy(tmp_path, {"005_status_index.sql": "DROP INDEX idx_by_hand;"})
    blocked = run_cli("deploy", "--migrations", str(replaced), env=env)
    assert blocked.rc == 5 and "table commands/index idx_by_hand" in blocked.error


def test_migrations_compare_names_every_difference(tmp_path: Path) -> None:
    same = run_cli("migrations", "compare", str(MIGRATIONS), str(RELAYER_MIGRATIONS))
    assert same.rc == 0 and same.finished["same"] is True

    sketch = migrations_copy(tmp_path / "sketch")  # the design note's 002, which never ran
    (sketch / "002_plan_schema.sql").write_text(
        "ALTER TABLE admin DROP COLUMN mfa_enabled;\n" + (MIGRATIONS / "002_plan_schema.sql").read_text()
    )
    (sketch / "005_extra.sql").write_text("CREATE TABLE extra (id INTEGER);\n")
    renamed = migrations_copy(tmp_path / "renamed")
    (renamed / "003_bootstrap_devices.sql").rename(renamed / "003_bootstrap.sql")
    broken = migrations_copy(tmp_path / "broken")
    (broken / "004_cursor_chat_id.sql").write_text("ALTER TABLE nowhere ADD COLUMN x TEXT;\n")

    differs = run_cli("migrations", "compare", str(RELAYER_MIGRATIONS), str(sketch))
    assert differs.rc == 5
    found = differs.finished["differences"]
    assert any("version 2" in d and "table admin" in d and "mfa_enabled" in d for d in found), found
    assert any("version 5" in d and "005_extra.sql" in d for d in found), found
    assert differs.error.startswith(f"{RELAYER_MIGRATIONS} and {sketch} build different schemas")

    names = run_cli("migrations", "compare", str(MIGRATIONS), str(renamed))
    assert names.rc == 5 and "file names differ: 003_bootstrap_devices.sql" in names.error
    failing = run_cli("migrations", "compare", str(MIGRATIONS), str(broken))
    assert failing.rc == 5 and "004_cursor_chat_id.sql line 1 fails on an empty database" in failing.error
    missing = run_cli("migrations", "compare", str(MIGRATIONS), str(tmp_path / "nowhere"))
    assert missing.rc == 2


def test_schema_accept_runs_beside_the_relayer_holding_the_lock(service) -> None:
    """Over `render ssh` the relayer (started by gate --hold-lock) holds the disk lock: accepting
    must still work there, and the next preflight must see the acceptance."""
    db = service["db"]
    db.parent.mkdir(parents=True, exist_ok=True)
    build_production(db)
    execute(db, "CREATE INDEX idx_by_hand ON commands (status)")
    with relayer_holding_the_lock(service, ALLOW_DRIFT="1"):
        assert run_cli("migrate", env=service["env"]).rc == 3  # writers still refused
        accepted = run_cli("schema", "accept", "--reason", "hand-made index", env=service["env"])
        assert accepted.rc == 0, accepted.stdout
        assert accepted.finished["acceptance_id"] == 1
    preflight = run_cli("preflight", env=offdisk_env(service["store"]))
    assert preflight.rc == 0, preflight.stdout
    assert run_cli("status", env=service["env"]).rc == 0


def test_schema_accept_through_the_start_path_takes_only_the_named_difference(service) -> None:
    """On Render the gate is the one place that has the disk without the relayer: the exit-5
    message gives the difference's fingerprint; SCHEMA_ACCEPT_REASON with that fingerprint makes the
    gate accept exactly that difference, and preflight rehearses the same on the snapshot."""
    db = service["db"]
    db.parent.mkdir(parents=True, exist_ok=True)
    build_production(db)
    assert run_cli("deploy", env=service["env"]).rc == 0  # a snapshot for preflight
    execute(db, "CREATE INDEX idx_by_hand ON commands (status)")
    assert run_cli("snapshot", env=service["env"]).rc == 0
    offdisk = offdisk_env(service["store"])
    refused = run_cli("preflight", env=offdisk)
    assert refused.rc == 5
    fingerprint = refused.finished["fingerprint"]
    assert f"SCHEMA_ACCEPT_FINGERPRINT={fingerprint}" in refused.error
    assert (
        json.loads(run_cli("status", "--json", env=service["env"]).stdout)["difference_fingerprint"]
        == fingerprint
    )
    request = {
        "SCHEMA_ACCEPT_REASON": "index from the March incident",
        "SCHEMA_ACCEPT_FINGERPRINT": fingerprint,
    }
    assert run_cli("preflight", env={**offdisk, "SCHEMA_ACCEPT_REASON": "why"}).rc == 2  # both or none
    rehearsed = run_cli("preflight", env={**offdisk, **request})
    assert rehearsed.rc == 0, rehearsed.stdout

    env = {**service["env"], **request}
    started, _ = gate(service, env=env)
    assert started.rc == 0, started.stdout
    assert started.finished["schema_accepted"] == 1
    assert json.loads(service["marker"].read_text())["ledger"] == ALL
    again, _ = gate(service, env=env)
    assert again.rc == 0 and again.finished["schema_accepted"] is None

    execute(db, "CREATE TRIGGER wipe AFTER INSERT ON commands BEGIN DELETE FROM repos; END")
    later, _ = gate(service, env=env)  # the variables left set do not take in a new difference
    assert (
        later.rc == 5
        and "trigger wipe" in later.error
        and "does not name the current difference" in later.error
    )


def test_accept_is_refused_when_the_deploy_would_still_fail(tmp_path: Path) -> None:
    """002 died after its first ALTER: the file cannot run again (duplicate column), so accepting
    the difference would turn status green while every deploy fails: refused, nothing recorded."""
    db = tmp_path / "relayer.db"
    build_production(db, version=1)
    assert start_and_die(db, RELAYER_MIGRATIONS, die_after=3) == -9
    env = env_for(db, tmp_path / "store")
    first = run_cli("status", env=env)
    assert first.rc == 5 and "002_plan_schema.sql looks partly applied" in first.error
    before = dump(db)
    refused = run_cli("schema", "accept", "--reason", "let it through", env=env)
    assert refused.rc == 5 and "would not get the next deploy through" in refused.error
    assert "duplicate column name: translator_model" in refused.error
    assert "nothing was recorded" in refused.error
    assert dump(db) == before and run_cli("status", env=env).rc == 5


def test_accept_is_refused_for_a_schema_that_lacks_what_the_relayer_uses(prod: Path, tmp_path: Path) -> None:
    env = env_for(prod, tmp_path / "store")
    execute(prod, "ALTER TABLE commands DROP COLUMN cursor_chat_id")
    refused = run_cli("schema", "accept", "--reason", "we do not need it", env=env)
    assert refused.rc == 5 and "lacks what the migrations create" in refused.error
    assert "column cursor_chat_id missing" in refused.error
    assert run_cli("status", env=env).rc == 5


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE _relayer_job_acceptances SET differences = '{not json'", "row 1 does not parse"),
        ("UPDATE _relayer_job_acceptances SET objects = '[]'", "row 1 has fields of the wrong type"),
        ("UPDATE _relayer_job_acceptances SET reason = x'00'", "row 1 has fields of the wrong type"),
        (
            "DROP TABLE _relayer_job_acceptances; CREATE TABLE _relayer_job_acceptances (id, note)",
            "its columns are id, note",
        ),
    ],
)
def test_a_damaged_acceptance_table_is_exit_5_naming_it(
    prod: Path, tmp_path: Path, sql: str, message: str
) -> None:
    env = env_for(prod, tmp_path / "store")
    execute(prod, "CREATE INDEX idx_by_hand ON commands (status)")
    assert run_cli("schema", "accept", "--reason", "hand index", env=env).rc == 0
    conn = sqlite3.connect(prod, isolation_level=None)
    conn.executescript(sql)
    conn.close()
    for command in ("status", "deploy"):
        run = run_cli(command, env=env)
        assert run.rc == 5, (command, run.stdout + run.stderr)
        assert "_relayer_job_acceptances is damaged" in run.error and message in run.error


def test_preflight_and_status_see_the_foreign_key_violations_the_gate_refuses(
    prod: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    env = env_for(prod, store)
    execute(prod, "INSERT INTO repos (id, admin_id, path, created_at) VALUES ('r', 'nobody', '/x', 'now')")
    assert run_cli("snapshot", env=env).rc == 0
    for run in (
        run_cli("preflight", env=offdisk_env(store)),
        run_cli("status", env=env),
        run_cli("deploy", env=env),
    ):
        assert run.rc == 5 and "foreign key violations" in run.error and "repos" in run.error


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("CHECK (role IN ('executor', 'controller'))", ""), "column role"),
        (
            ("username TEXT UNIQUE NOT NULL", "username TEXT UNIQUE NOT NULL COLLATE NOCASE"),
            "column username",
        ),
        (("    name TEXT,\n    role", "    role"), "column order"),
        (("UNIQUE (admin_id, device_id)", "UNIQUE (device_id, admin_id)"), "constraint"),
    ],
)
def test_compare_and_drift_see_what_only_the_sql_says(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    """CHECK constraints, COLLATE, column order and table constraints live in the SQL text only."""
    changed = migrations_copy(tmp_path / "changed")
    first = changed / "001_initial.sql"
    text = first.read_text()
    assert edit[0] in text
    first.write_text(text.replace(edit[0], edit[1], 1))
    if edit == ("    name TEXT,\n    role", "    role"):  # move `name` to the end: same columns, other order
        first.write_text(
            first.read_text().replace(
                "last_seen_at TEXT NOT NULL,", "last_seen_at TEXT NOT NULL,\n    name TEXT,", 1
            )
        )
    compared = run_cli("migrations", "compare", str(RELAYER_MIGRATIONS), str(changed))
    assert compared.rc == 5 and expected in compared.error, compared.error
    db = tmp_path / "live.db"
    assert run_cli("migrate", "--db", str(db), "--migrations", str(changed)).rc == 0
    execute(db, "UPDATE _schema_migrations SET checksum = NULL")  # as if the relayer had recorded them
    drifted = run_cli("status", "--db", str(db))
    assert drifted.rc == 5 and expected in drifted.error


def test_tables_whose_names_merely_start_like_sqlite_ones_are_compared(tmp_path: Path) -> None:
    extra = migrations_copy(tmp_path / "extra", {"005_stats.sql": "CREATE TABLE sqlitestats (id INTEGER);"})
    compared = run_cli("migrations", "compare", str(MIGRATIONS), str(extra))
    assert compared.rc == 5 and "005_stats.sql" in compared.error
    db = tmp_path / "live.db"
    assert run_cli("migrate", "--db", str(db)).rc == 0
    execute(db, "CREATE TABLE sqlite1 (id INTEGER)")
    drifted = run_cli("status", "--db", str(db))
    assert drifted.rc == 5 and "table sqlite1" in drifted.error
