"""What the image does before any work: hand a root-owned database directory to the service user
(never the whole disk, never recursively), refuse root as that user, and say what an unconfigured
container needs. The privilege drop itself (setuid) is exercised in containers by
scripts/image-test.sh, where the service user can run the job; here the interpreter lives where
another user could not read it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from job import privileges
from job.config import load
from job.errors import EnvironmentRefused, UsageError
from tests.conftest import base_env
from tests.support.legacy import build_legacy_001

NOBODY = privileges.Account("65534:65534", 65534, 65534, (65534,))
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


@pytest.fixture
def disk() -> Iterator[Path]:
    """A root-owned directory (mode 755), like the root of a fresh Render disk."""
    with tempfile.TemporaryDirectory(prefix="relayer-disk-") as path:
        Path(path).chmod(0o755)
        yield Path(path)


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


@root_only
def test_root_owned_directory_and_database_are_handed_over_and_nothing_else(disk: Path) -> None:
    db = disk / "relayer.db"
    build_legacy_001(db, commands=5)
    db.chmod(0o644)
    (disk / "relayer.db-journal").write_bytes(b"")
    (disk / "unrelated.txt").write_text("x")
    (disk / "backups").mkdir()
    (disk / "backups" / "old.db").write_text("x")
    (disk / "relayer.db-wal").symlink_to(disk / "unrelated.txt")
    privileges.prepare_database_directory(load({}, {"DATABASE_PATH": str(db)}), NOBODY)
    assert owner(disk) == owner(db) == owner(disk / "relayer.db-journal") == (65534, 65534)
    for untouched in ("unrelated.txt", "backups", "backups/old.db", "relayer.db-wal"):
        assert owner(disk / untouched) == (0, 0), untouched


@root_only
def test_a_directory_the_user_can_write_is_left_alone(disk: Path) -> None:
    disk.chmod(0o1777)
    privileges.prepare_database_directory(load({}, {"DATABASE_PATH": str(disk / "relayer.db")}), NOBODY)
    assert owner(disk) == (0, 0)
    group_writable = disk / "shared"
    group_writable.mkdir()
    group_writable.chmod(0o775)
    os.chown(group_writable, 0, 65534)
    privileges.prepare_database_directory(
        load({}, {"DATABASE_PATH": str(group_writable / "relayer.db")}), NOBODY
    )
    assert owner(group_writable) == (0, 65534)


@root_only
def test_a_missing_database_directory_is_created_for_the_user_not_its_parent(disk: Path) -> None:
    db = disk / "db" / "relayer.db"
    privileges.prepare_database_directory(load({}, {"DATABASE_PATH": str(db)}), NOBODY)
    assert owner(db.parent) == (65534, 65534) and owner(disk) == (0, 0)
    assert not db.exists()


@root_only
def test_nothing_is_created_when_the_disk_is_not_mounted(disk: Path) -> None:
    db = disk / "db" / "relayer.db"
    env = {"DATABASE_PATH": str(db), "DISK_MOUNT_PATH": str(disk), "JOB_USER": "65534:65534"}
    with pytest.raises(EnvironmentRefused, match="not a mounted disk"):
        privileges.drop(load({}, env), database=True)
    assert not db.parent.exists() and owner(disk) == (0, 0)
    assert os.geteuid() == 0  # refused before dropping anything


def test_job_user_is_resolved_and_never_root() -> None:
    nobody = privileges.resolve("nobody")
    assert (nobody.uid, nobody.name) == (65534, "nobody") and nobody.gid in nobody.groups
    assert privileges.resolve("10001:10001") == privileges.Account("10001:10001", 10001, 10001, (10001,))
    for spec, message in [
        ("root", "must not be root"),
        ("0:0", "must not be root"),
        ("10001:0", "must not be root"),
        ("no-such-user", "no user named 'no-such-user'"),
        ("10001:no-such-group", "no group named"),
    ]:
        with pytest.raises(UsageError, match=message):
            privileges.resolve(spec)


def test_permission_bits_are_read_for_owner_group_and_others() -> None:
    def st(uid: int, gid: int, mode: int) -> os.stat_result:
        return os.stat_result((0o40000 | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    wx = privileges.WRITE_SEARCH
    assert privileges.allows(st(65534, 0, 0o700), NOBODY, wx)
    assert not privileges.allows(st(0, 0, 0o755), NOBODY, wx)
    assert privileges.allows(st(0, 65534, 0o770), NOBODY, wx)
    assert not privileges.allows(st(65534, 0, 0o077), NOBODY, wx)  # the owner bits decide
    assert privileges.allows(st(0, 0, 0o777), NOBODY, wx)


def test_unconfigured_image_names_what_it_needs_and_creates_nothing(cli, tmp_path: Path) -> None:
    env = base_env(JOB_NO_DEFAULTS="1")
    deploy = cli("deploy", env=env, cwd=tmp_path)
    assert deploy.rc == 2
    assert "DATABASE_PATH" in deploy.error and "SNAPSHOT_STORE" in deploy.error
    assert len(deploy.stdout.strip().splitlines()) == 1  # the one job.finished line
    preflight = cli("preflight", env=env, cwd=tmp_path)
    assert preflight.rc == 2 and "SNAPSHOT_STORE" in preflight.error
    assert "DATABASE_PATH" not in preflight.error
    migrate = cli("migrate", env=env, cwd=tmp_path)
    assert migrate.rc == 2 and "SNAPSHOT_STORE" not in migrate.error
    assert list(tmp_path.iterdir()) == []
    configured = cli(
        "migrate", "--db", str(tmp_path / "data" / "relayer.db"), env=base_env(JOB_NO_DEFAULTS="1")
    )
    assert configured.rc == 0, configured.stdout
    url_env = base_env(
        JOB_NO_DEFAULTS="1",
        DATABASE_URL=f"sqlite:{tmp_path}/data/relayer.db",
        SNAPSHOT_STORE=f"file:{tmp_path}/store",
    )
    by_url = cli("status", env=url_env)
    assert by_url.rc == 0, by_url.stdout + by_url.stderr
