"""SIGTERM/SIGINT to a working job (real signals to real subprocesses): it stops at a safe point,
logs one job.finished, exits 128+N, releases the lock and leaves the database and the store intact."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from job import stop
from job.errors import DeadlineExceeded, MigrationFailed, Stopped
from tests.conftest import base_env, cli_argv
from tests.support.legacy import REPO, build_legacy_001
from tests.support.slow import SLOW_MIGRATION, SLOW_ROWS
from tests.test_crash_and_concurrency import finish, wait_for_event
from tests.test_migrate import ALL, migrations_copy, query
from tests.test_s3_snapshots import env_for

VERY_SLOW = SLOW_MIGRATION.replace(str(SLOW_ROWS), str(SLOW_ROWS * 20))  # a minute or more


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_argv(*args),
        env=env or base_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_migration_rolls_back_and_does_not_start_the_command(
    db_path: Path, tmp_path: Path, signum: int, code: int
) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=200)
    store = f"file:{tmp_path / 'store'}"
    assert finish(start("migrate", "--db", str(db_path))).rc == 0  # at 004: the slow 005 comes first
    migrations = migrations_copy(tmp_path, {"005_slow.sql": VERY_SLOW})
    started_marker = tmp_path / "relayer-started"
    proc = start(
        "gate", "--hold-lock", "--db", str(db_path), "--store", store, "--migrations", str(migrations),
        "--", "touch", str(started_marker),
    )  # fmt: skip
    wait_for_event(proc, "migration.started")
    time.sleep(0.3)  # inside the slow statement
    proc.send_signal(signum)
    result = finish(proc)

    assert result.rc == code, result.stdout + result.stderr
    finished = result.finished  # exactly one
    assert finished["outcome"] == "stopped" and finished["error_code"] == "stopped_by_signal"
    assert signal.Signals(signum).name in result.error and "rolled back" in result.error
    assert finished["snapshot_id"]  # the pre-migrate snapshot, the way back, was committed
    assert not started_marker.exists(), "the command must not start after a stop"
    assert lock_is_free(db_path.parent / ".relayer-job.lock")
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations ORDER BY name")] == ALL
    assert not query(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'big'")
    assert "priority" not in [r[1] for r in query(db_path, "PRAGMA table_info(commands)")]
    assert query(db_path, "SELECT count(*) FROM commands") == [(200,)]


@pytest.mark.s3
def test_sigterm_mid_upload_commits_no_snapshot(s3_server, bucket, proxy, tmp_path: Path) -> None:
    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_legacy_001(db, commands=300)
    env = env_for(s3_server, bucket, proxy.endpoint)
    rule = proxy.add_rule("PUT", r"relayer\.db\.zst$", "stall", stall_seconds=3)
    proc = start("snapshot", "--db", str(db), env=env)
    deadline = time.monotonic() + 60
    while rule.fired == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert rule.fired == 1, "the upload never started"
    proc.send_signal(signal.SIGTERM)  # the data object is in flight, its response stalled
    result = finish(proc)

    assert result.rc == 143, result.stdout + result.stderr
    assert result.finished["error_code"] == "stopped_by_signal" and "SIGTERM" in result.error
    listed = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert not [o for o in listed if o["Key"].endswith("manifest.json")], "a stopped snapshot was committed"
    assert lock_is_free(db.parent / ".relayer-job.lock")
    assert not list(db.parent.glob(".relayer-job-snapshot-*")), "scratch files left behind"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_sigterm_while_waiting_for_the_lock(db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=10)
    lock_file = db_path.parent / ".relayer-job.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = start("migrate", "--db", str(db_path), "--lock-timeout", "120")
        wait_for_event(proc, "lock.waiting")
        proc.send_signal(signal.SIGTERM)
        result = finish(proc)
    finally:
        os.close(fd)
    assert result.rc == 143, result.stdout + result.stderr
    assert "waiting for the lock" in result.error
    assert [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations")] == ALL[:1]


def test_an_unrelated_failure_keeps_its_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stop, "_received", signal.SIGTERM)
    failed = MigrationFailed("005 line 1 failed")
    assert stop.explain(failed) is failed
    interrupted = stop.explain(DeadlineExceeded("deadline exceeded while applying 005", migration="005"))
    assert isinstance(interrupted, Stopped) and interrupted.exit_code == 143
    assert interrupted.facts == {"migration": "005"}


def test_a_stop_after_the_work_keeps_gate_from_starting_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stop.after_success({}, starting="relayer") is None
    monkeypatch.setattr(stop, "_received", signal.SIGINT)
    late = stop.after_success({"schema_version": 4}, starting="relayer")
    assert late is not None and late.exit_code == 130
    assert "relayer was not started" in late.message and late.facts == {"schema_version": 4}
