"""Paths are judged where they really lead: the disk check and the lock file resolve `..`, symlinks
and hard links, so that no spelling puts the database off the disk or truncates it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from job.config import load
from job.environment import check_database_location
from job.errors import EnvironmentRefused, UsageError
from job.lock import acquire
from tests.conftest import base_env
from tests.support.legacy import build_legacy_001
from tests.support.service import mounted_disk


@pytest.fixture(scope="module")
def disk() -> Iterator[Path]:
    with mounted_disk() as point:
        yield point


@pytest.fixture
def data(disk: Path) -> Iterator[Path]:
    """A fresh directory on the disk, removed afterwards (the disk may be the shared /dev/shm)."""
    directory = disk / f"svc-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def refused(disk: Path, db: Path, lock: Path | None = None) -> str:
    with pytest.raises(EnvironmentRefused) as caught:
        check_database_location(db, disk=disk, allow_network_fs=False, lock_file=lock)
    assert caught.value.exit_code == 4
    return caught.value.message


def test_dot_dot_out_of_the_disk_is_refused_and_nothing_is_created(cli, disk: Path, tmp_path: Path) -> None:
    off = tmp_path / "x"
    db = disk / ".." / os.path.relpath(off, disk.parent) / "relayer.db"
    assert Path(os.path.realpath(db)) == off / "relayer.db"
    env = base_env(DATABASE_PATH=str(db), DISK_MOUNT_PATH=str(disk))
    run = cli("migrate", env=env)
    assert run.rc == 4 and "is not under" in run.error and "DATABASE_PATH" in run.error
    assert not off.exists()


def test_a_database_symlink_off_the_disk_is_refused_and_its_target_not_created(
    cli, disk: Path, data: Path, tmp_path: Path
) -> None:
    (data / "relayer.db").symlink_to(tmp_path / "elsewhere.db")
    run = cli("migrate", env=base_env(DATABASE_PATH=str(data / "relayer.db"), DISK_MOUNT_PATH=str(disk)))
    assert run.rc == 4 and str(tmp_path / "elsewhere.db") in run.error
    assert not (tmp_path / "elsewhere.db").exists()


def test_symlinked_files_and_directories_are_judged_where_they_lead(
    disk: Path, data: Path, tmp_path: Path
) -> None:
    build_legacy_001(tmp_path / "real.db", commands=5)
    (data / "relayer.db").symlink_to(tmp_path / "real.db")
    assert "DATABASE_PATH" in refused(disk, data / "relayer.db")
    (tmp_path / "dir").mkdir()
    (data / "link").symlink_to(tmp_path / "dir")
    assert "DATABASE_PATH" in refused(disk, data / "link" / "relayer.db")
    # on the disk through a symlink that stays on the disk: fine
    (data / "inner").mkdir()
    (data / "alias.db").symlink_to(data / "inner" / "relayer.db")
    check_database_location(data / "alias.db", disk=disk, allow_network_fs=False, lock_file=data / "x.lock")


def test_the_lock_file_must_be_on_the_disk_too(disk: Path, data: Path, tmp_path: Path) -> None:
    db = data / "relayer.db"
    assert "JOB_LOCK_FILE" in refused(disk, db, tmp_path / "job.lock")
    (data / "job.lock").symlink_to(tmp_path / "job.lock")
    assert "JOB_LOCK_FILE" in refused(disk, db, data / "job.lock")
    assert "JOB_LOCK_FILE" in refused(disk, db, disk / ".." / os.path.relpath(tmp_path, disk.parent) / "l")
    assert not (tmp_path / "job.lock").exists()


def test_a_filesystem_mounted_below_the_disk_is_not_the_disk(disk: Path, data: Path) -> None:
    inner = data / "inner"
    inner.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inner)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert "DATABASE_PATH" in refused(disk, inner / "relayer.db")
    finally:
        subprocess.run(["umount", "-l", str(inner)], check=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "relayer.db"
    path.parent.mkdir()
    build_legacy_001(path, commands=5)
    return path


def lock_spellings(db: Path) -> list[Path]:
    """Paths that all lead to the database or one of its journal files."""
    directory = db.parent
    (directory / "sub").mkdir()
    (directory / "to-db").symlink_to(db)
    (directory / "to-wal").symlink_to(directory / "relayer.db-wal")
    (directory / "same-dir").symlink_to(directory)
    os.link(db, directory / "hard-link")
    return [
        directory / "sub" / ".." / "relayer.db",
        directory / "sub" / ".." / "relayer.db-journal",
        directory / "to-db",
        directory / "to-wal",
        directory / "same-dir" / "relayer.db-shm",
        directory / "hard-link",
    ]


def test_a_lock_file_that_leads_to_the_database_is_refused(db: Path) -> None:
    for lock in lock_spellings(db):
        with pytest.raises(UsageError) as caught:
            load({"db": str(db), "lock_file": str(lock)}, {})
        assert "JOB_LOCK_FILE" in caught.value.message, lock
    # the database given through a symlink, the lock by its real name
    with pytest.raises(UsageError):
        load({"db": str(db.parent / "to-db"), "lock_file": str(db)}, {})
    assert load({"db": str(db), "lock_file": str(db.parent / "job.lock")}, {}).lock_file.name == "job.lock"


def test_cli_refuses_such_a_lock_and_leaves_the_database_whole(cli, db: Path) -> None:
    before = db.read_bytes()
    env = base_env(DATABASE_PATH=str(db), JOB_LOCK_FILE=str(db.parent / "sub" / ".." / db.name))
    (db.parent / "sub").mkdir()
    run = cli("migrate", env=env)
    assert run.rc == 2 and "JOB_LOCK_FILE" in run.error
    assert db.read_bytes() == before


def test_taking_the_lock_never_truncates_a_file_that_is_not_a_lock(db: Path) -> None:
    """Whatever path got past the configuration (a hard link made after it, say)."""
    before = db.read_bytes()
    with pytest.raises(UsageError) as caught:
        acquire(db, timeout=1, command="test")
    assert caught.value.exit_code == 2 and "not a lock record" in caught.value.message
    assert db.read_bytes() == before
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_lock_file_is_reused_empty_or_holding_a_record(tmp_path: Path) -> None:
    lock = tmp_path / "job.lock"
    acquire(lock, timeout=1, command="first").release()
    assert lock.read_text().startswith('{"pid"')
    acquire(lock, timeout=1, command="second").release()
    lock.write_text("")
    acquire(lock, timeout=1, command="third").release()
    assert "third" in lock.read_text()
