"""Real SIGKILLs and real races: the database is always at a whole version, no file applied twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Run, base_env, cli_argv
from tests.support.legacy import REPO, build_legacy_001, relayer_startup
from tests.support.slow import SLOW_MIGRATION, SLOW_ROWS
from tests.test_migrate import ALL, migrations_copy, query


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_argv(*args),
        env=base_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def wait_for_event(proc: subprocess.Popen[str], name: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == name:
            return event
    raise AssertionError(f"{name} never logged")


def finish(proc: subprocess.Popen[str]) -> Run:
    out, err = proc.communicate(timeout=120)
    return Run(proc.returncode, out, err)


def test_sigkill_mid_migration_leaves_the_previous_version(db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=500)
    assert (
        subprocess.run(
            cli_argv("migrate", "--db", str(db_path)), env=base_env(), cwd=REPO, capture_output=True
        ).returncode
        == 0
    )
    migrations = migrations_copy(tmp_path, {"005_slow.sql": SLOW_MIGRATION})
    proc = start("migrate", "--db", str(db_path), "--migrations", str(migrations))
    wait_for_event(proc, "migration.started")
    journal = Path(f"{db_path}-journal")
    deadline = time.monotonic() + 20
    while not journal.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well inside the slow statement
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert journal.exists() and journal.stat().st_size > 0  # a hot journal was really left behind

    # Opening the database rolls the hot journal back: version 004, consistent.
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations ORDER BY name")] == ALL
    assert "priority" not in [r[1] for r in query(db_path, "PRAGMA table_info(commands)")]
    assert not query(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'big'")
    assert query(db_path, "SELECT count(*) FROM commands") == [(500,)]

    rerun = start("migrate", "--db", str(db_path), "--migrations", str(migrations))
    result = finish(rerun)
    assert result.rc == 0, result.stdout
    assert [a["name"] for a in result.finished["applied"]] == ["005_slow.sql"]
    assert query(db_path, "SELECT count(*) FROM big") == [(SLOW_ROWS,)]


def test_two_runners_at_once_apply_each_file_exactly_once(db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir()
    build_legacy_001(db_path, commands=100)
    migrations = migrations_copy(tmp_path, {"005_slow.sql": SLOW_MIGRATION})
    args = ("migrate", "--db", str(db_path), "--migrations", str(migrations))
    first, second = start(*args), start(*args)
    results = [finish(first), finish(second)]
    assert [r.rc for r in results] == [0, 0], [r.stdout for r in results]
    applied = [[a["name"] for a in r.finished["applied"]] for r in results]
    assert sorted(applied, key=len) == [[], [*ALL[1:], "005_slow.sql"]]
    waiter = next(r for r in results if not r.finished["applied"])
    waiter.event("lock.waiting")
    assert query(db_path, "SELECT count(*) FROM big") == [(SLOW_ROWS,)]
    assert relayer_startup(db_path, migrations) == []


def test_waiter_gives_up_with_exit_3_naming_the_holder(db_path: Path, tmp_path: Path) -> None:
    migrations = migrations_copy(tmp_path, {"005_slow.sql": SLOW_MIGRATION})
    holder = start("migrate", "--db", str(db_path), "--migrations", str(migrations))
    wait_for_event(holder, "lock.acquired")
    result = finish(start("migrate", "--db", str(db_path), "--lock-timeout", "0.5"))
    assert result.rc == 3
    assert f"held by pid {holder.pid}" in result.error and "running 'migrate'" in result.error
    assert finish(holder).rc == 0


def test_lock_of_a_killed_holder_is_released_by_the_kernel(tmp_path: Path) -> None:
    lock = tmp_path / ".relayer-job.lock"
    code = (
        "import sys, time; from job.lock import acquire; "
        f"acquire(__import__('pathlib').Path({str(lock)!r}), timeout=5, command='holder'); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=base_env(), cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert "held\n" in iter(proc.stdout.readline, "")  # reads past the lock.acquired log line
    assert json.loads(lock.read_text())["pid"] == proc.pid
    from job.errors import LockTimeout
    from job.lock import acquire

    try:
        acquire(lock, timeout=0.2, command="test")
        raise AssertionError("lock should be held")
    except LockTimeout as exc:
        assert f"pid {proc.pid}" in exc.message
    proc.kill()
    proc.wait()
    taken = acquire(lock, timeout=2, command="test")
    assert json.loads(lock.read_text())["command"] == "test"
    taken.release()
    assert lock.exists()  # never deleted on release


def test_lock_never_touches_sqlite_files(db_path: Path) -> None:
    db_path.parent.mkdir()
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    from job.lock import acquire

    lock = acquire(db_path.parent / ".relayer-job.lock", timeout=1, command="t")
    try:
        writer = sqlite3.connect(db_path, timeout=0.1)
        writer.execute("INSERT INTO t VALUES (1)")
        writer.commit()
        writer.close()
    finally:
        lock.release()


def test_deadline_interrupts_a_running_migration_and_rolls_it_back(db_path: Path, tmp_path: Path) -> None:
    very_slow = SLOW_MIGRATION.replace(str(SLOW_ROWS), str(SLOW_ROWS * 20))  # a minute or more
    migrations = migrations_copy(tmp_path, {"005_slow.sql": very_slow})
    first = finish(start("migrate", "--db", str(db_path)))
    assert first.rc == 0
    started = time.monotonic()
    result = finish(
        start("migrate", "--db", str(db_path), "--migrations", str(migrations), "--deadline", "4")
    )
    assert result.rc == 9 and "005_slow.sql" in result.error and "rolled back" in result.error
    assert time.monotonic() - started < 10
    assert not query(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'big'")
    assert [r[0] for r in query(db_path, "SELECT name FROM _schema_migrations ORDER BY name")] == ALL
