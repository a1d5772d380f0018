"""Environment checks: network filesystems refused, mount detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.environment import mount_of, refuse_network_fs
from job.errors import EnvironmentRefused


def mountinfo(tmp_path: Path, fs_type: str, point: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"40 27 0:50 / {point} rw,relatime - {fs_type} server:/export rw\n"
    )
    return path


@pytest.mark.parametrize("fs_type", ["nfs", "nfs4", "cifs", "fuse.sshfs", "fuse", "9p"])
def test_network_filesystems_are_refused(tmp_path: Path, fs_type: str) -> None:
    info = mountinfo(tmp_path, fs_type, str(tmp_path))
    db = tmp_path / "data" / "relayer.db"
    with pytest.raises(EnvironmentRefused) as caught:
        refuse_network_fs(db, allowed=False, mountinfo=info)
    assert fs_type in caught.value.message and "--allow-network-fs" in caught.value.message
    assert caught.value.exit_code == 4
    refuse_network_fs(db, allowed=True, mountinfo=info)


def test_local_filesystem_passes_and_escaped_mount_points_parse(tmp_path: Path) -> None:
    spaced = tmp_path / "my disk"
    spaced.mkdir()
    info = mountinfo(tmp_path, "nfs", str(spaced).replace(" ", "\\040"))
    assert mount_of(spaced / "relayer.db", info).fs_type == "nfs"
    refuse_network_fs(tmp_path / "relayer.db", allowed=False, mountinfo=info)
    assert mount_of(tmp_path / "relayer.db", info).fs_type == "ext4"
