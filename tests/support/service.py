"""The service on Render, for the tests: the database on a real mount point (the disk), a file store,
and a stand-in for the relayer that `gate` execs. Fixtures `disk` and `service` (registered in
tests/conftest.py), helpers `run` and `gate`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, base_env, cli_argv
from tests.support.legacy import REPO

STAND_IN = """#!{python}
# A stand-in for the relayer: proves it runs in gate's process, with the migrated schema.
import json, os, sqlite3, sys, time
db = os.environ["DATABASE_PATH"]
conn = sqlite3.connect(db)
columns = [r[1] for r in conn.execute("PRAGMA table_info(commands)")]
ledger = [r[0] for r in conn.execute("SELECT name FROM _schema_migrations ORDER BY name")]
with open(sys.argv[1], "w") as f:
    json.dump({{"pid": os.getpid(), "columns": columns, "ledger": ledger, "args": sys.argv[2:]}}, f)
time.sleep(float(os.environ.get("STAND_IN_SLEEP", "0")))
"""


@contextlib.contextmanager
def mounted_disk() -> Iterator[Path]:
    """A real mount point: a fresh tmpfs when this process may mount, else a folder on /dev/shm's."""
    point = Path(tempfile.mkdtemp(prefix="relayer-disk-"))
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(point)], capture_output=True
        ).returncode
        == 0
    )
    if mounted:
        try:
            yield point
        finally:
            subprocess.run(["umount", "-l", str(point)], check=False)
            point.rmdir()
        return
    point.rmdir()
    shm = Path("/dev/shm")
    if not (os.path.ismount(shm) and os.access(shm, os.W_OK)):
        pytest.skip("no mount point available: cannot mount a tmpfs and /dev/shm is not writable")
    yield shm


@pytest.fixture
def disk() -> Iterator[Path]:
    with mounted_disk() as point:
        yield point


@pytest.fixture
def service(disk: Path, tmp_path: Path):
    """The service's environment on Render: the database on the disk, a store, the stand-in."""
    data = disk / f"svc-{uuid.uuid4().hex[:8]}" if disk == Path("/dev/shm") else disk
    db = data / "relayer.db"
    stand_in = tmp_path / "relayer"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    env = base_env(
        DATABASE_PATH=str(db),
        DISK_MOUNT_PATH=str(disk),
        SNAPSHOT_STORE=f"file:{tmp_path / 'store'}",
    )
    yield {
        "db": db,
        "env": env,
        "stand_in": stand_in,
        "marker": tmp_path / "started.json",
        "store": tmp_path / "store",
    }
    if data != disk:
        shutil.rmtree(data, ignore_errors=True)


def run(*args: str, env: dict[str, str], timeout: float = 120) -> Run:
    proc = subprocess.run(cli_argv(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def gate(service, *extra: str, env: dict[str, str] | None = None) -> tuple[Run, int]:
    proc = subprocess.Popen(
        cli_argv("gate", *extra, "--", str(service["stand_in"]), str(service["marker"]), "--port", "8080"),
        env=env or service["env"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    return Run(proc.returncode, out, err), proc.pid


@contextlib.contextmanager
def relayer_holding_the_lock(service: dict[str, Any], **extra_env: str) -> Iterator[subprocess.Popen[str]]:
    """`gate --hold-lock` started with the stand-in, which then sleeps (the running relayer,
    holding the shared disk lock); killed on the way out."""
    proc = subprocess.Popen(
        cli_argv("gate", "--hold-lock", "--", str(service["stand_in"]), str(service["marker"])),
        env={**service["env"], "STAND_IN_SLEEP": "60", **extra_env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not service["marker"].exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service["marker"].exists(), "the relayer stand-in did not start"
        yield proc
    finally:
        proc.kill()
        proc.communicate()
