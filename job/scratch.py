"""Scratch files a restore leaves beside the database when it is killed: removed by every command
that takes the disk lock, so that a full-size download never lingers on a small disk.

Any holder of the lock may remove them: a restore holds the lock exclusively, so none can be
running beside the caller. (Snapshot scratch files carry their writer's pid and are removed by
`snapshot.create`, since snapshots run beside each other under the shared lock.)
"""

from __future__ import annotations

from pathlib import Path

from job.log import get_logger

RESTORE_PREFIX = ".relayer-job-restore-"
RECORD_PREFIX = ".relayer-job-restored"


def remove_leftovers(directory: Path) -> list[str]:
    """Remove what killed restores left in `directory`; the caller holds the disk lock."""
    removed = []
    records = directory.glob(f"{RECORD_PREFIX}*.tmp")  # a record's write cut short (a full disk, say)
    for leftover in sorted([*directory.glob(f"{RESTORE_PREFIX}*"), *records]):
        if leftover.is_dir() and not leftover.is_symlink():
            continue  # not something a restore makes
        leftover.unlink(missing_ok=True)
        get_logger().info("restore.scratch_removed", path=str(leftover))
        removed.append(str(leftover))
    return removed
