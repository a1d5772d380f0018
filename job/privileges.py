"""Start as root only as far as needed, then run as the service user (JOB_USER; the image sets it).

A persistent disk's root directory may belong to root (a fresh Docker volume's does; Render does
not document what it does for a non-root image), and then the unprivileged service user could not
create relayer.db there. Started as root, the job hands the database directory (never the whole
disk, never recursively) and the database's own files to the service user when that user cannot
write them, then drops privileges for good (setgroups, setgid, setuid) before it opens the
database or starts the relayer. Without JOB_USER, or when not started as root, nothing happens.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from job.config import Config
from job.environment import check_database_location, existing_ancestor
from job.errors import UsageError
from job.log import get_logger

DATABASE_SUFFIXES = ("", "-journal", "-wal", "-shm")
WRITE_SEARCH, READ_WRITE = 0o3, 0o6  # permission bits as they appear in the "other" triple


@dataclass(frozen=True)
class Account:
    spec: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None = None
    home: str | None = None


def resolve(spec: str) -> Account:
    """JOB_USER as a user name or UID[:GID]; never root, because the relayer would run as root."""
    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        entry = None
    if entry is None and not user.isdigit():
        raise UsageError(f"JOB_USER: no user named {user!r} here; give an existing name or UID:GID")
    uid = entry.pw_uid if entry else int(user)
    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid if group else None
    except KeyError:
        raise UsageError(f"JOB_USER: no group named {group!r} here") from None
    if gid is None:
        gid = entry.pw_gid if entry else uid
    if uid == 0 or gid == 0:
        raise UsageError(f"JOB_USER={spec}: must not be root; the relayer never runs as root")
    name = entry.pw_name if entry else None
    groups = tuple(os.getgrouplist(name, gid)) if name else (gid,)
    return Account(spec, uid, gid, groups, name, entry.pw_dir if entry else None)


def allows(st: os.stat_result, account: Account, wanted: int) -> bool:
    """Whether the mode bits of `st` grant `account` the `wanted` rwx bits."""
    if st.st_uid == account.uid:
        shift = 6
    elif st.st_gid in account.groups:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & wanted == wanted


def _hand_over(path: Path, account: Account, what: str) -> None:
    st = path.lstat()
    os.chown(path, account.uid, account.gid, follow_symlinks=False)
    get_logger().info(
        "ownership.changed",
        path=str(path),
        what=what,
        owner=f"{st.st_uid}:{st.st_gid}",
        new_owner=f"{account.uid}:{account.gid}",
        mode=oct(stat.S_IMODE(st.st_mode)),
    )


def prepare_database_directory(config: Config, account: Account) -> None:
    """Make the database directory and the database's own files usable by `account` (as root)."""
    directory = config.db_path.absolute().parent
    if not directory.exists():
        parent = existing_ancestor(directory)
        if allows(parent.stat(), account, WRITE_SEARCH):
            return  # the job creates it as the service user
        missing = [directory, *[p for p in directory.parents if not p.exists()]]
        for created in reversed(missing):
            created.mkdir(mode=0o755)
            _hand_over(created, account, "database directory (created)")
        return
    if not allows(directory.stat(), account, WRITE_SEARCH):
        _hand_over(directory, account, "database directory")
    db = config.db_path.absolute()
    own_files = [db.with_name(db.name + suffix) for suffix in DATABASE_SUFFIXES] + [config.lock_file]
    for path in own_files:
        if path.is_symlink() or not path.is_file():
            continue
        if not allows(path.stat(), account, READ_WRITE):
            _hand_over(path, account, "database file")


def switch_to(account: Account) -> None:
    """Drop root for good: supplementary groups, then group, then user (setuid as root also sets
    the saved uid, so there is no way back)."""
    if account.name:
        os.initgroups(account.name, account.gid)
    else:
        os.setgroups([account.gid])
    os.setgid(account.gid)
    os.setuid(account.uid)
    if account.home:
        os.environ["HOME"] = account.home
    get_logger().info(
        "privileges.dropped", user=account.name or account.spec, uid=account.uid, gid=account.gid
    )


def drop(config: Config, *, database: bool) -> None:
    """As root with JOB_USER set: prepare the database directory (commands that touch the
    database, after the disk check so that nothing is created on a missing disk), then run as
    JOB_USER."""
    if os.geteuid() != 0 or config.run_as is None:
        return
    account = resolve(config.run_as)
    if database:
        check_database_location(
            config.db_path, disk=config.disk_mount_path, allow_network_fs=config.allow_network_fs
        )
        prepare_database_directory(config, account)
    switch_to(account)
