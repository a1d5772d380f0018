"""The Render lifecycle, simulated end to end with the real CLI in subprocesses.

Pre-deploy phase: no disk (a plain directory with DISK_MOUNT_PATH set). Start phase: a real mount
point (a tmpfs the test mounts, else /dev/shm), where `gate` snapshots, migrates and execs the relayer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.conftest import base_env
from tests.support.dbtools import scalar
from tests.support.legacy import build_legacy_001, dump, relayer_startup
from tests.support.service import gate, relayer_holding_the_lock, run
from tests.test_migrate import ALL, migrations_copy


def test_predeploy_phase_deploy_refuses_off_disk_and_creates_nothing(tmp_path: Path) -> None:
    not_a_disk = tmp_path / "data"
    not_a_disk.mkdir()
    env = base_env(
        DATABASE_PATH=str(not_a_disk / "relayer.db"),
        DISK_MOUNT_PATH=str(not_a_disk),
        SNAPSHOT_STORE=f"file:{tmp_path / 'store'}",
    )
    result = run("deploy", env=env)
    assert result.rc == 4
    assert "pre-deploy command" in result.error and "preflight" in result.error and "gate" in result.error
    assert list(not_a_disk.iterdir()) == [] and not (tmp_path / "store").exists()
    gated = run("gate", "--", "true", env=env)
    assert gated.rc == 4 and list(not_a_disk.iterdir()) == []
    for command in (
        ["migrate"],
        ["migrate", "--dry-run"],
        ["snapshot", "--if-db-exists"],
        ["status"],
        ["restore"],
    ):
        refused = run(*command, env=env)
        assert refused.rc == 4 and "not a mounted disk" in refused.error, command
        assert list(not_a_disk.iterdir()) == [] and not (tmp_path / "store").exists(), command


def test_preflight_passes_on_good_migrations_and_blocks_a_migration_that_breaks_on_real_data(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    live = tmp_path / "live" / "relayer.db"
    live.parent.mkdir()
    build_legacy_001(live, commands=30)
    env = base_env(DATABASE_PATH=str(live), SNAPSHOT_STORE=f"file:{store}")
    assert run("deploy", env=env).rc == 0  # a snapshot of real data now exists

    offdisk = base_env(
        DATABASE_PATH="/nonexistent-disk/relayer.db",
        DISK_MOUNT_PATH="/nonexistent-disk",
        SNAPSHOT_STORE=f"file:{store}",
    )
    good = run("preflight", env=offdisk)
    assert good.rc == 0, good.stdout
    assert good.finished["would_apply"] == [] and good.event("store.writable")
    assert (
        good.finished["rehearsed_on"]
        == json.loads(run("snapshots", "list", "--json", env=offdisk).stdout)[0]["id"]
    )

    migrations = migrations_copy(
        tmp_path, {"005_owner.sql": "ALTER TABLE commands ADD COLUMN owner TEXT NOT NULL;"}
    )
    bad = run("preflight", env={**offdisk, "MIGRATIONS_DIR": str(migrations)})
    assert bad.rc == 7 and "005_owner.sql" in bad.error and "NOT NULL" in bad.error
    assert not Path("/nonexistent-disk").exists()
    assert not list((store / "preflight").iterdir()) if (store / "preflight").exists() else True


def test_preflight_on_a_first_deploy_rehearses_on_an_empty_database(tmp_path: Path) -> None:
    env = base_env(SNAPSHOT_STORE=f"file:{tmp_path / 'store'}", DATABASE_PATH="/nowhere/relayer.db")
    result = run("preflight", env=env)
    assert result.rc == 0 and result.finished["rehearsed_on"] == "empty database"
    assert result.finished["would_apply"] == ALL
    result.event("rehearsal.empty")


def test_start_phase_gate_snapshots_migrates_and_execs_the_relayer(service) -> None:
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=100)
    result, gate_pid = gate(service)
    assert result.rc == 0, result.stdout + result.stderr
    started = json.loads(service["marker"].read_text())
    assert started["pid"] == gate_pid  # exec'd: the relayer replaced the job's process
    assert "cursor_chat_id" in started["columns"] and started["ledger"] == ALL
    assert started["args"] == ["--port", "8080"]
    finished = result.finished
    assert [a["name"] for a in finished["applied"]] == ALL[1:]
    assert finished["snapshot_id"] and finished["exec"][0] == str(service["stand_in"])
    manifests = {
        m["reason"]: m
        for m in (
            json.loads((p / "manifest.json").read_text()) for p in (service["store"] / "snapshots").iterdir()
        )
    }
    assert manifests.keys() == {"pre-migrate", "post-migrate"}
    assert manifests["pre-migrate"]["id"] == finished["snapshot_id"]
    assert manifests["pre-migrate"]["schema_version"] == 1
    assert manifests["post-migrate"]["schema_version"] == 4
    assert manifests["post-migrate"]["id"] == finished["post_migrate_snapshot_id"]
    assert relayer_startup(service["db"]) == []

    service["marker"].unlink()
    started_at = time.monotonic()
    again, _ = gate(service)
    assert again.rc == 0 and again.finished["applied"] == []
    assert again.finished["snapshot_unchanged"] is True  # nothing uploaded on a re-run
    assert again.finished["post_migrate_snapshot_id"] is None
    assert again.finished["durations_s"]["migrate"] < 1 and time.monotonic() - started_at < 10
    assert json.loads(service["marker"].read_text())["ledger"] == ALL
    assert len(list((service["store"] / "snapshots").iterdir())) == 2


def test_start_phase_failing_migration_never_starts_the_relayer(service, tmp_path: Path) -> None:
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=40)
    assert gate(service)[0].rc == 0
    service["marker"].unlink()
    before = dump(service["db"])
    migrations = migrations_copy(
        tmp_path, {"005_owner.sql": "ALTER TABLE commands ADD COLUMN owner TEXT NOT NULL;"}
    )
    result, _ = gate(service, env={**service["env"], "MIGRATIONS_DIR": str(migrations)})
    assert result.rc == 7 and "005_owner.sql" in result.error
    assert result.finished["snapshot_id"]  # the way back, in the one line the operator reads
    assert not service["marker"].exists()
    assert dump(service["db"]) == before


def test_first_deploy_on_a_new_disk_creates_the_database(service) -> None:
    result, _ = gate(service)
    assert result.rc == 0 and result.finished["new_database"] is True
    result.event("database.missing")
    assert json.loads(service["marker"].read_text())["ledger"] == ALL


def test_gate_hold_lock_makes_manual_disk_commands_wait(service) -> None:
    with relayer_holding_the_lock(service) as proc:
        asked_at = time.monotonic()
        blocked = run("migrate", "--lock-timeout", "60", env=service["env"])
        assert blocked.rc == 3 and "gate --hold-lock" in blocked.error and str(proc.pid) in blocked.error
        assert "held by the running relayer" in blocked.error and "RESTORE_SNAPSHOT" in blocked.error
        assert time.monotonic() - asked_at < 10  # no point waiting for a relayer to finish
        restore = run("restore", "--force", "--lock-timeout", "0.5", env=service["env"])
        assert restore.rc == 3
        # A snapshot only reads: it shares the lock with the running relayer.
        snap = run("snapshot", "--reason", "manual", "--lock-timeout", "0.5", env=service["env"])
        assert snap.rc == 0, snap.stdout
    assert run("migrate", "--lock-timeout", "5", env=service["env"]).rc == 0


def test_gate_refuses_a_missing_command_before_touching_anything(service) -> None:
    result = run("gate", "--", "no-such-relayer-binary", env=service["env"])
    assert result.rc == 2 and "no-such-relayer-binary" in result.error
    assert not service["db"].exists()
    empty = run("gate", env=service["env"])
    assert empty.rc == 2 and "gate -- relayer" in empty.error


def test_deploy_refuses_a_damaged_live_database_before_snapshot_or_migration(service) -> None:
    from tests.test_snapshot import corrupt

    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=3000)
    corrupt(service["db"])
    result = run("deploy", env=service["env"])
    assert result.rc == 5 and "quick_check" in result.error
    assert not (service["store"] / "snapshots").exists()


def test_snapshot_failure_stops_the_deploy_before_any_migration(service, tmp_path: Path) -> None:
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=10)
    blocked_store = tmp_path / "store-is-a-file"
    blocked_store.write_text("not a directory")
    before = dump(service["db"])
    result = run("deploy", env={**service["env"], "SNAPSHOT_STORE": f"file:{blocked_store}"})
    assert result.rc == 6, result.stdout
    assert dump(service["db"]) == before


def test_restore_requested_through_the_environment_happens_once(service) -> None:
    """Render: set RESTORE_SNAPSHOT and redeploy; restarts must not restore again."""
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=60)
    first, _ = gate(service)
    good = first.finished["post_migrate_snapshot_id"]
    conn = sqlite3.connect(service["db"])
    conn.execute("DELETE FROM commands")  # the incident
    conn.commit()
    conn.close()
    env = {**service["env"], "RESTORE_SNAPSHOT": good}
    restored, _ = gate(service, env=env)
    assert restored.rc == 0, restored.stdout
    assert restored.finished["restored"] == good
    assert query_count(service["db"]) == 60
    conn = sqlite3.connect(service["db"])
    conn.execute("DELETE FROM commands WHERE rowid % 2 = 0")  # written by the relayer afterwards
    conn.commit()
    conn.close()
    again, _ = gate(service, env=env)
    assert again.rc == 0 and again.finished["restored"] is None
    again.event("restore.already_done")
    assert query_count(service["db"]) == 30


def query_count(db: Path) -> int:
    return int(str(scalar(db, "SELECT count(*) FROM commands")))


def test_preflight_of_a_rollback_rehearses_on_the_snapshot_it_will_restore(tmp_path: Path) -> None:
    live = tmp_path / "live" / "relayer.db"
    live.parent.mkdir()
    build_legacy_001(live, commands=10)
    newer = migrations_copy(tmp_path, {"005_notes.sql": "CREATE TABLE notes (id TEXT PRIMARY KEY);"})
    store = f"file:{tmp_path / 'store'}"
    deployed = run(
        "deploy", env=base_env(DATABASE_PATH=str(live), SNAPSHOT_STORE=store, MIGRATIONS_DIR=str(newer))
    )
    assert deployed.rc == 0 and deployed.finished["post_migrate_snapshot_id"]
    old_image = base_env(SNAPSHOT_STORE=store, DATABASE_PATH="/nowhere/relayer.db")  # the old migrations
    blocked = run("preflight", env=old_image)
    assert blocked.rc == 5 and "newer than this job" in blocked.error
    rollback = run("preflight", env={**old_image, "RESTORE_SNAPSHOT": deployed.finished["snapshot_id"]})
    assert rollback.rc == 0, rollback.stdout
    assert rollback.finished["rehearsed_on"] == deployed.finished["snapshot_id"]


def test_missing_database_with_snapshots_in_the_store_is_refused(service) -> None:
    """A new disk or a wrong DATABASE_PATH must not start the relayer empty without being asked."""
    service["db"].parent.mkdir(parents=True, exist_ok=True)
    build_legacy_001(service["db"], commands=30)
    first, _ = gate(service)
    assert first.rc == 0
    service["marker"].unlink()
    service["db"].unlink()
    refused, _ = gate(service)
    newest = first.finished["post_migrate_snapshot_id"]
    assert refused.rc == 5 and f"RESTORE_SNAPSHOT={newest}" in refused.error
    assert "ALLOW_NEW_DATABASE=1" in refused.error
    assert not service["marker"].exists() and not service["db"].exists()
    allowed, _ = gate(service, env={**service["env"], "ALLOW_NEW_DATABASE": "1"})
    assert allowed.rc == 0 and allowed.finished["new_database"] is True


def test_database_outside_the_disk_is_refused(disk: Path, tmp_path: Path) -> None:
    env = base_env(
        DATABASE_PATH=str(tmp_path / "elsewhere" / "relayer.db"),
        DISK_MOUNT_PATH=str(disk),
        SNAPSHOT_STORE=f"file:{tmp_path / 'store'}",
    )
    result = run("deploy", env=env)
    assert result.rc == 4 and "is not under" in result.error and "DATABASE_PATH" in result.error
    assert not (tmp_path / "elsewhere").exists()


def test_gate_reports_a_command_that_cannot_be_executed(service, tmp_path: Path) -> None:
    broken = tmp_path / "not-a-program"
    broken.write_bytes(b"\x7fELF but not really")
    broken.chmod(0o755)
    result = run("gate", "--", str(broken), env=service["env"])
    assert result.rc == 2
    failed = result.event("gate.exec_failed")
    assert (
        str(broken) in failed["error"] and result.finished["outcome"] == "ok"
    )  # the deploy itself succeeded


def test_gate_names_a_command_that_exists_but_is_not_executable(service, tmp_path: Path) -> None:
    script = tmp_path / "relayer.sh"
    script.write_text("#!/bin/sh\nexit 0\n")  # mode 644: exists, cannot be run
    result = run("gate", "--", str(script), env=service["env"])
    assert (
        result.rc == 2
        and result.error == f"gate: command {str(script)!r} is not executable; nothing was changed"
    )
    assert not service["db"].exists()
