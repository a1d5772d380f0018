"""Docker plumbing for the image test: run containers, read what the job and the fake relayer logged,
clean up everything a run created (images stay, as the next run's build cache)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import json_lines
from tests.support import seaweed
from tests.support.seaweed import free_port

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOCKER = shlex.split(os.environ.get("DOCKER", "docker"))
RUN_ID = f"rjtest-{secrets.token_hex(3)}"
# tags: job, service, service-v2, ...; IMAGE_TEST_REPOSITORY keeps parallel runs on one engine apart
IMAGE = os.environ.get("IMAGE_TEST_REPOSITORY", "relayer-job-test")
APP_UID = 10001
MB = 1_000_000


class CheckFailed(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def say(text: str) -> None:
    print(text, flush=True)


def docker(*args: str, check_rc: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*DOCKER, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check_rc and proc.returncode != 0:
        raise CheckFailed(
            f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


@dataclass
class Run:
    """One container's output: the job's JSON lines and the fake relayer's records."""

    rc: int | None
    output: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.output) if "event" in e]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def after(self, mark: str) -> list[dict[str, Any]]:
        """The events after the first `mark` event (none if there is none)."""
        events = self.events
        marks = [i for i, e in enumerate(events) if e["event"] == mark]
        return events[marks[0] + 1 :] if marks else []

    @property
    def finished(self) -> dict[str, Any]:
        found = self.named("job.finished")
        check(len(found) == 1, f"expected exactly one job.finished, got {len(found)}:\n{self.output[-3000:]}")
        return found[0]

    def relayer(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in json_lines(self.output) if r.get("fake_relayer") == kind]


@dataclass
class Lab:
    """Everything the run creates, removed at the end (images stay for the next run's cache)."""

    work: Path
    s3: seaweed.SeaweedS3 | None = None
    bucket: str = ""
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def store_env(self) -> dict[str, str]:
        assert self.s3 is not None
        return {**self.s3.env(), "SNAPSHOT_STORE": f"s3://{self.bucket}/relayer", "LOG_FORMAT": "json"}

    def volume(self, purpose: str) -> str:
        name = f"{RUN_ID}-{purpose}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check_rc=False)
        for name in self.volumes:
            docker("volume", "rm", "-f", name, check_rc=False)
        if self.s3 is not None:
            self.s3.stop()


def env_args(env: dict[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


def disk_env(port: int | None = None) -> dict[str, str]:
    env = {"DATABASE_PATH": "/data/relayer.db", "DISK_MOUNT_PATH": "/data"}
    if port is not None:
        env.update(PORT=str(port), HOST="127.0.0.1")
    return env


def run_once(
    lab: Lab,
    image: str,
    *command: str,
    volume: str | None = None,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> Run:
    """`docker run --rm` to completion."""
    mounts = ["-v", f"{volume}:/data"] if volume else []
    proc = docker(
        "run",
        "--rm",
        "--network=host",
        *mounts,
        *env_args(env or {}),
        *extra,
        image,
        *command,
        check_rc=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


@dataclass
class Service:
    """A started container of the service image (the gate, then the relayer)."""

    name: str
    port: int

    def logs(self) -> str:
        proc = docker("logs", self.name, check_rc=False)
        return proc.stdout + proc.stderr

    def run(self) -> Run:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", self.name).stdout.split()
        return Run(None if state[0] == "true" else int(state[1]), self.logs())

    def started_at(self) -> float:
        """When the container's process started (epoch seconds; Docker gives nanoseconds)."""
        stamp = docker("inspect", "-f", "{{.State.StartedAt}}", self.name).stdout.strip()
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds until /health answers; fails if the container exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return time.monotonic()
            if self.run().rc is not None:
                raise CheckFailed(f"{self.name} exited instead of serving:\n{self.logs()[-4000:]}")
            time.sleep(0.02)
        raise CheckFailed(f"{self.name}: /health never answered")

    def write(self) -> int:
        """One write by the relayer (fake_relayer's GET /write); the rows written so far."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/write", timeout=10) as r:
            return int(r.read())

    def db(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/db", timeout=5) as r:
            return dict(json.loads(r.read()))

    def stop(self) -> tuple[Run, float]:
        """`docker stop` (SIGTERM, SIGKILL after 30 s, as Render's default shutdown delay); the run
        and the seconds it took."""
        started = time.monotonic()
        docker("stop", "-t", "30", self.name)
        return self.run(), time.monotonic() - started


def start_service(
    lab: Lab,
    image: str,
    volume: str,
    *,
    env: dict[str, str] | None = None,
    command: tuple[str, ...] = (),
    entrypoint: str | None = None,
) -> Service:
    name = f"{RUN_ID}-{len(lab.containers):02d}"
    port = free_port()
    lab.containers.append(name)
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-v",
        f"{volume}:/data",
        *env_args({**lab.store_env(), **disk_env(port), **(env or {})}),
        *extra,
        image,
        *command,
    )
    return Service(name, port)


def sql(volume: str, statement: str) -> list[list[Any]]:
    """Run one statement on the disk's database as the service user (the relayer stopped)."""
    script = (
        "import json, sqlite3, sys; c = sqlite3.connect('/data/relayer.db'); "
        "rows = c.execute(sys.argv[1]).fetchall(); c.commit(); print(json.dumps(rows))"
    )
    proc = docker(
        "run",
        "--rm",
        "--network=none",
        "--user",
        f"{APP_UID}:{APP_UID}",
        "-v",
        f"{volume}:/data",
        "--entrypoint",
        "python",
        f"{IMAGE}:job",
        "-c",
        script,
        statement,
    )
    return list(json.loads(proc.stdout))


def owner_of(volume: str, *paths: str) -> list[str]:
    proc = docker(
        "run",
        "--rm",
        "--network=none",
        "-v",
        f"{volume}:/data",
        "--entrypoint",
        "stat",
        f"{IMAGE}:job",
        "-c",
        "%u:%g",
        *paths,
    )
    return proc.stdout.split()


@contextmanager
def lab_session() -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="relayer-image-test-") as work:
        lab = Lab(Path(work))
        try:
            lab.s3 = seaweed.start(Path(work) / "s3")
            lab.bucket = lab.s3.make_bucket(f"image-test-{secrets.token_hex(4)}")
            yield lab
        finally:
            lab.cleanup()
