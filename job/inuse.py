"""Who else has the database open: a process that does not take the disk lock (a relayer started
without `gate --hold-lock`, a sqlite3 shell, a script) would go on writing into the file a
restore replaces, and its writes would be lost with it.

Two ways of seeing them, because neither sees everything: the processes holding the database or
its journal files open (/proc, for the processes this user may inspect: an idle connection in
rollback-journal mode, as the relayer's, holds no lock at all), and SQLite's own locks, taken
through SQLite (every connection to a WAL database holds one, and a connection in a transaction
in any mode; this also sees processes in other containers sharing the disk).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from job.errors import DatabaseInUse
from job.log import get_logger

SIDECARS = ("-journal", "-wal", "-shm")
PROC = Path("/proc")


def _holders(paths: list[Path]) -> list[str]:
    """The other processes with one of `paths` open, as 'pid N (name)'."""
    wanted = set()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    found: list[str] = []
    if not wanted or not PROC.is_dir():
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                st = fd.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                try:
                    name = (entry / "comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append(f"pid {entry.name} ({name})")
                break
    return found


def _locked_by_another(db_path: Path) -> bool:
    """Whether SQLite refuses this connection the database exclusively, at once. Exclusive locking
    mode makes a WAL database refuse too while any other connection has it open."""
    try:
        conn = sqlite3.connect(
            f"{db_path.absolute().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None
        )
    except sqlite3.Error:
        return False  # not a database SQLite can open: nobody uses it through SQLite either
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()
    return False


def _database_files(db_path: Path) -> list[Path]:
    return [db_path, *(Path(f"{db_path}{suffix}") for suffix in SIDECARS)]


def seen_open(db_path: Path) -> list[str]:
    """The processes /proc shows with the database open; empty when it cannot tell. Never fails and
    never touches SQLite's locks: for choices that are only about priority."""
    try:
        return _holders(_database_files(db_path))
    except OSError:
        return []


def others(db_path: Path) -> list[str]:
    """Who else has the database open, as short descriptions; empty when nobody is seen."""
    if not db_path.exists():
        return []
    found = _holders(_database_files(db_path))
    if not found and _locked_by_another(db_path):
        found.append("a connection holding a SQLite lock on it (a process this user cannot inspect)")
    return found


def refuse_others(db_path: Path, *, override: str | None, overridden: bool = False) -> list[str]:
    """DatabaseInUse (exit 3) naming who else has the database open. `override` names the flag that
    lets a manual command go on anyway (None where no override exists: the start path); with
    `overridden` it goes on, and says so."""
    found = others(db_path)
    if not found:
        return found
    if override is not None and overridden:
        get_logger().warning("database.in_use_ignored", db=str(db_path), holders=found, flag=override)
        return found
    raise DatabaseInUse(
        f"database {db_path} is open in another process ({', '.join(found)}): replacing it now would "
        "lose what that process writes (its writes would go to the replaced copy); stop it first"
        + (
            f", or pass {override} to go on anyway"
            if override
            else " (the start path never goes on beside it)"
        ),
        holders=found,
    )
