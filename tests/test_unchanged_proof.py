"""Snapshots and deploys skip a database that provably has not changed since its newest snapshot
(SQLite's file change counter, page count, inode, size, ctime, mtime, recorded in the manifest). The
proof must be sound: a database changed in any way is never reported unchanged."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import base_env, run_cli
from tests.support.legacy import build_legacy_001


def snapshot(db: Path, store: Path) -> dict[str, object]:
    run = run_cli("snapshot", "--db", str(db), "--store", f"file:{store}")
    assert run.rc == 0, run.stdout + run.stderr
    return run.finished


def same_size_update(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE commands SET status = 'redo' WHERE rowid = (SELECT min(rowid) FROM commands)")
    conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "relayer.db"
    build_legacy_001(path, commands=400)
    return path


def test_an_unchanged_database_is_proven_unchanged_without_copying(db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = snapshot(db, store)
    run = run_cli("snapshot", "--db", str(db), "--store", f"file:{store}")
    assert run.rc == 0 and run.finished["unchanged"] is True
    assert run.finished["snapshot_id"] == first["snapshot_id"]
    assert run.event("snapshot.unchanged")["proof"] == "file state"
    assert not [e for e in run.events if e.get("event") == "snapshot.copy_progress"]
    assert "copy_s" not in run.finished


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_one_row_change_of_the_same_size_is_never_unchanged(
    db: Path, tmp_path: Path, journal_mode: str
) -> None:
    if journal_mode == "wal":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.close()
    store = tmp_path / "store"
    first = snapshot(db, store)
    size = db.stat().st_size
    same_size_update(db)
    assert db.stat().st_size == size
    second = snapshot(db, store)
    assert second["unchanged"] is False and second["snapshot_id"] != first["snapshot_id"]


def test_a_write_behind_sqlites_back_is_never_unchanged(db: Path, tmp_path: Path) -> None:
    """Bytes changed without SQLite (the change counter stays) and the mtime put back: ctime tells."""
    store = tmp_path / "store"
    snapshot(db, store)
    st = db.stat()
    with db.open("r+b") as f:  # the header's application id: still a valid database
        f.seek(68)
        f.write(b"\x01\x02\x03\x04")
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = run_cli("snapshot", "--db", str(db), "--store", f"file:{store}")
    assert run.rc == 0 and run.finished["unchanged"] is False


def test_a_replaced_file_is_never_unchanged(db: Path, tmp_path: Path) -> None:
    """A copy of the very same bytes in place of the file (a restore, a manual copy): another inode,
    so it is read again; its content is the same, so nothing new is committed."""
    store = tmp_path / "store"
    first = snapshot(db, store)
    twin = tmp_path / "twin.db"
    shutil.copy2(db, twin)
    twin.replace(db)
    run = run_cli("snapshot", "--db", str(db), "--store", f"file:{store}")
    assert run.rc == 0 and run.finished["unchanged"] is True
    assert run.event("snapshot.unchanged")["proof"] == "content"
    assert run.finished["snapshot_id"] == first["snapshot_id"]


def test_a_no_op_deploy_skips_health_checks_and_copies_only_when_proven(db: Path, tmp_path: Path) -> None:
    env = base_env(DATABASE_PATH=str(db), SNAPSHOT_STORE=f"file:{tmp_path / 'store'}")
    assert run_cli("deploy", env=env).rc == 0
    again = run_cli("deploy", env=env)
    assert again.rc == 0 and again.finished["snapshot_unchanged"] is True
    again.event("database.unchanged")
    assert "health" not in again.finished["durations_s"] and "snapshot" not in again.finished["durations_s"]
    same_size_update(db)
    changed = run_cli("deploy", env=env)
    assert changed.rc == 0 and changed.finished["snapshot_unchanged"] is False
    assert "health" in changed.finished["durations_s"]
    assert not [e for e in changed.events if e.get("event") == "database.unchanged"]
