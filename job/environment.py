"""Checks on the machine the job runs on: which filesystem holds the database, is the disk mounted.

On Render the pre-deploy command and one-off jobs run without the service's persistent disk; an
unmounted mount path is just an empty folder there. These checks turn that into a loud refusal.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from job.config import Config
from job.errors import EnvironmentRefused

NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse", "9p", "ceph", "glusterfs", "lustre", "afs"}
)
MIN_SQLITE = (3, 35, 5)  # DROP COLUMN (3.35.0), with the fixes that could corrupt the file (3.35.5)


@dataclass(frozen=True)
class Mount:
    mount_point: Path
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    found = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 2:
            found.append(Mount(Path(_unescape(fields[4])), rest[0], rest[1]))
    return found


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path.resolve()


def mount_of(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> Mount:
    """The mount that holds `path` (or would hold it, for a file not created yet)."""
    target = existing_ancestor(path)
    best = None
    for mount in mounts(mountinfo):
        holds = target == mount.mount_point or mount.mount_point in target.parents
        if holds and (best is None or len(mount.mount_point.parts) >= len(best.mount_point.parts)):
            best = mount
    if best is None:
        raise EnvironmentRefused(f"cannot find the filesystem that holds {path}")
    return best


def is_network_fs(fs_type: str) -> bool:
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith(("fuse.", "nfs"))


def refuse_network_fs(
    db_path: Path, *, allowed: bool, mountinfo: Path = Path("/proc/self/mountinfo")
) -> None:
    mount = mount_of(db_path.parent, mountinfo)
    if is_network_fs(mount.fs_type) and not allowed:
        raise EnvironmentRefused(
            f"{db_path.parent} is on a network filesystem ({mount.fs_type} at {mount.mount_point}), "
            "where SQLite locking is unreliable; move the database to a local disk or pass "
            "--allow-network-fs if you accept the risk"
        )


def is_mount_point(path: Path) -> bool:
    return path.is_dir() and os.path.ismount(path)


def resolved(path: Path) -> Path:
    """Where `path` really is: `..` and the symlinks of the file and of every directory above it
    resolved, as the kernel will when the file is opened or created."""
    return Path(os.path.realpath(path))


def _on_disk(disk: Path, path: Path) -> bool:
    """`path`, resolved, is below the mount point `disk` and on its filesystem (not on another
    one mounted below it)."""
    real, disk_real = resolved(path), resolved(disk)
    if disk_real not in real.parents:
        return False
    return existing_ancestor(real.parent).stat().st_dev == disk_real.stat().st_dev


def require_disk(disk: Path, db_path: Path, lock_file: Path | None = None) -> None:
    """Refuse unless `disk` is mounted and holds the database and the lock file, wherever `..`
    and symlinks lead (exit 4, nothing created)."""
    if not is_mount_point(disk):
        raise EnvironmentRefused(
            f"--disk / DISK_MOUNT_PATH {disk} is not a mounted disk here. Render's pre-deploy command "
            "and one-off jobs run without the service's disk: use 'relayer-job preflight' there, "
            "'relayer-job gate --supervise -- relayer' as the start command (dockerCommand), and "
            "'render ssh' for manual disk commands. If this is the start command, the disk is not mounted at "
            "DISK_MOUNT_PATH: check disk.mountPath in render.yaml"
        )
    if not _on_disk(disk, db_path):
        raise EnvironmentRefused(
            f"database {db_path} (really {resolved(db_path)}) is not under --disk / DISK_MOUNT_PATH "
            f"{disk}: set DATABASE_PATH to a file on the disk, or it will not survive a deploy"
        )
    if lock_file is not None and not _on_disk(disk, lock_file):
        raise EnvironmentRefused(
            f"lock file {lock_file} (really {resolved(lock_file)}) is not under --disk / "
            f"DISK_MOUNT_PATH {disk}: every process that touches the database must share one lock on "
            "the disk; unset --lock-file / JOB_LOCK_FILE or point it at a file on the disk"
        )


def require_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        want = ".".join(map(str, MIN_SQLITE))
        raise EnvironmentRefused(
            f"SQLite {sqlite3.sqlite_version} is too old: the migrations need >= {want} "
            "(ALTER TABLE DROP COLUMN); use the job's container image"
        )


def require_free_space(directory: Path, needed: int, *, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise EnvironmentRefused(
            f"not enough free space in {directory} for {what}: need {needed} bytes, {free} free; "
            "remove kept copies (relayer.db.replaced-*; RESTORE_KEEP_REPLACED limits them) or "
            "other files there, or grow the disk"
        )


def ensure_directory(directory: Path) -> None:
    """Create the database's directory (the relayer does the same on first start)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentRefused(
            f"cannot create {directory} for the database: {exc.strerror or exc}; check --db / "
            "DATABASE_PATH and that the disk is mounted and writable"
        ) from exc


def check_location(config: Config, *, takes_lock: bool = True) -> None:
    """check_database_location for a command's configuration (with its lock file, if it takes it)."""
    check_database_location(
        config.db_path,
        disk=config.disk_mount_path,
        allow_network_fs=config.allow_network_fs,
        lock_file=config.lock_file if takes_lock else None,
    )


def check_database_location(
    db_path: Path, *, disk: Path | None, allow_network_fs: bool, lock_file: Path | None = None
) -> None:
    """Every command that reads or writes the live database: the database (and the lock file of
    the commands that take it) on the mounted disk when one is configured (DISK_MOUNT_PATH), never
    on a network filesystem. Creates nothing."""
    if disk is not None:
        require_disk(disk, db_path, lock_file)
    refuse_network_fs(resolved(db_path), allowed=allow_network_fs)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
