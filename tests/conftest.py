"""Shared fixtures: run the real CLI in a subprocess and read its JSON log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.legacy import MIGRATIONS, REPO


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a command's output."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.stdout + "\n" + self.stderr)

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e.get("event") == name]
        assert found, f"no {name} event in output:\n{self.stdout}\n{self.stderr}"
        return found[-1]

    @property
    def finished(self) -> dict[str, Any]:
        finished = [e for e in self.events if e.get("event") == "job.finished"]
        assert len(finished) == 1, f"expected one job.finished:\n{self.stdout}\n{self.stderr}"
        return finished[0]

    @property
    def error(self) -> str:
        return str(self.finished.get("error", ""))


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DATABASE_", "JOB_", "SNAPSHOT_", "S3_", "RENDER", "DISK_"))
    }
    env.update(LOG_FORMAT="json", PYTHONPATH=str(REPO), MIGRATIONS_DIR=str(MIGRATIONS))
    env.update(extra)
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "job", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> Run:
    proc = subprocess.run(
        cli_argv(*args),
        env=env or base_env(),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relayer.db"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """One real SeaweedFS S3 server on 127.0.0.1 for the whole session, stopped by PID after."""
    from tests.support import seaweed

    server = seaweed.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server) -> str:
    import uuid

    return s3_server.make_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def proxy(s3_server):
    from tests.support.faults import FaultProxy

    fault_proxy = FaultProxy("127.0.0.1", s3_server.ports["s3.port"]).start()
    yield fault_proxy
    fault_proxy.stop()


from tests.support.service import disk, service  # noqa: E402, F401 (fixtures for every test module)
