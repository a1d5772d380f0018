"""Environmental failures map to their documented exit codes, not to 'internal error'."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from job.errors import translate


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/x"), 4, "permission denied on /data/x"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/y"), 4, "no space left"),
        (OSError(errno.EROFS, "Read-only file system"), 4, "read-only filesystem"),
        (sqlite3.OperationalError("database is locked"), 3, "locked by another process"),
        (sqlite3.DatabaseError("database disk image is malformed"), 5, "malformed"),
    ],
)
def test_translate(exc: BaseException, code: int, text: str) -> None:
    known = translate(exc)
    assert known is not None and known.exit_code == code and text in known.message


def test_bugs_stay_internal_errors() -> None:
    assert translate(ValueError("x")) is None
    assert translate(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_read_only_disk_is_exit_4_end_to_end(cli) -> None:
    point = Path(tempfile.mkdtemp(prefix="relayer-ro-"))
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)], capture_output=True
    ).returncode:
        point.rmdir()
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        run = cli("migrate", "--db", str(point / "relayer.db"))
        assert run.rc == 4 and "read-only" in run.error.lower(), run.stdout
    finally:
        subprocess.run(["umount", str(point)], check=False)
        point.rmdir()


def test_database_directory_that_cannot_be_created_is_exit_4(cli) -> None:
    run = cli("migrate", "--db", "/proc/no-such-dir/relayer.db")
    assert run.rc == 4 and "cannot create /proc/no-such-dir" in run.error
