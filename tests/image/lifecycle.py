"""The image, for real: build `job` and `service`, then run Render's deploy lifecycle in containers.

Run through scripts/image-test.sh (any Docker engine that DOCKER_HOST or the default socket
reaches; containers use the host network to reach a real S3 server, SeaweedFS, on 127.0.0.1).
The relayer is tests/image/fake_relayer.py in a small image of its own, given to the service
build as RELAYER_IMAGE like any prebuilt relayer; the disk is a Docker volume, a real mount whose
root belongs to root as on a fresh Render disk. Every step checks exit codes, the one
`job.finished` line, the database and what the relayer recorded (its pid, parent, uid, signals).
At the end it prints the measured figures. Exit 0 when every check passed.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import seaweed
from tests.support.legacy import build_legacy_001

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOCKER = shlex.split(os.environ.get("DOCKER", "docker"))
BASE_IMAGE = "python:3.12-slim-trixie"
RUN_ID = f"rjtest-{secrets.token_hex(3)}"
IMAGE = "relayer-job-test"  # tags: job, service, service-v2, ...
APP_UID = 10001
MB = 1_000_000
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "job",
    "image",
)
GOOD_005 = "ALTER TABLE devices ADD COLUMN label TEXT;\n"
BAD_006 = "ALTER TABLE devices ADD COLUMN platform TEXT NOT NULL;\n"  # fails once devices has rows


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


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    launched_at: float

    def logs(self) -> str:
        proc = docker("logs", self.name, check_rc=False)
        return proc.stdout + proc.stderr

    def run(self) -> Run:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", self.name).stdout.split()
        return Run(None if state[0] == "true" else int(state[1]), self.logs())

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

    def wait_exit(self, timeout: float = 120) -> Run:
        docker("wait", self.name, timeout=timeout)
        return self.run()

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
    launched = time.time()
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
    return Service(name, port, launched)


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


# --- images ----------------------------------------------------------------------------------------


def context_with(lab: Lab, label: str, extra_migrations: dict[str, str]) -> Path:
    """A copy of the build inputs with more migration files (a new version of the repository)."""
    context = lab.work / f"context-{label}"
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    shutil.copytree(REPO / "migrations", context / "migrations")
    for file_name, text in extra_migrations.items():
        (context / "migrations" / file_name).write_text(text)
    return context


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return docker("build", "--network=host", "--progress=plain", *args, check_rc=False)


def fake_relayer_image(lab: Lab, tag: str, migrations: Path) -> str:
    """FROM scratch: the fake relayer at /usr/local/bin/relayer and the relayer's own migrations
    where the Dockerfile's RELAYER_MIGRATIONS default expects them."""
    context = lab.work / f"relayer-{tag}"
    shutil.copytree(migrations, context / "migrations")
    shutil.copy2(HERE / "fake_relayer.py", context / "relayer")
    (context / "relayer").chmod(0o755)
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY relayer /usr/local/bin/relayer\n"
        "COPY migrations/ /usr/local/share/relayer/migrations/\n"
    )
    image = f"{IMAGE}:{tag}"
    proc = build("-t", image, str(context))
    check(proc.returncode == 0, f"fake relayer build failed:\n{proc.stderr[-3000:]}")
    return image


def service_image(tag: str, context: Path, relayer: str) -> subprocess.CompletedProcess[str]:
    return build("--build-arg", f"RELAYER_IMAGE={relayer}", "-t", f"{IMAGE}:{tag}", str(context))


def build_images(lab: Lab) -> None:
    say("== build: job, fake relayer, service (plain `docker build`, BuildKit's built-in frontend)")
    started = time.monotonic()
    proc = build("--target", "job", "-t", f"{IMAGE}:job", str(REPO))
    check(proc.returncode == 0, f"job build failed:\n{proc.stderr[-4000:]}")
    relayer = fake_relayer_image(lab, "relayer-v1", REPO / "migrations")
    proc = service_image("service", REPO, relayer)
    check(proc.returncode == 0, f"service build failed:\n{proc.stderr[-4000:]}")
    for version, extra in (
        ("v2", {"005_device_label.sql": GOOD_005}),
        ("v3", {"005_device_label.sql": GOOD_005, "006_device_platform.sql": BAD_006}),
    ):
        context = context_with(lab, version, extra)
        relayer = fake_relayer_image(lab, f"relayer-{version}", context / "migrations")
        proc = service_image(f"service-{version}", context, relayer)
        check(proc.returncode == 0, f"service-{version} build failed:\n{proc.stderr[-4000:]}")
    say(f"   ok: built in {time.monotonic() - started:.1f} s")

    say("== build: a relayer whose own migrations differ is refused, naming the difference")
    drifted = lab.work / "drifted-migrations"
    shutil.copytree(REPO / "migrations", drifted)
    last = sorted(drifted.glob("*.sql"))[-1]
    last.write_text(last.read_text() + "ALTER TABLE commands ADD COLUMN shadow_column TEXT;\n")
    relayer = fake_relayer_image(lab, "relayer-drifted", drifted)
    proc = service_image("service-drifted", REPO, relayer)
    check(proc.returncode != 0, "a service build with differing relayer migrations succeeded")
    check(
        "shadow_column" in proc.stderr and last.name in proc.stderr,
        f"the failed build does not name the difference:\n{proc.stderr[-3000:]}",
    )
    say(f"   ok: build failed at `migrations compare`, naming {last.name} and shadow_column")

    say("== build: APP_UID/APP_GID that already exist in the base (65534, nobody/nogroup)")
    proc = build(
        "--target",
        "job",
        "--build-arg",
        "APP_UID=65534",
        "--build-arg",
        "APP_GID=65534",
        "-t",
        f"{IMAGE}:job-65534",
        str(REPO),
    )
    check(proc.returncode == 0, f"job build with APP_UID=65534 failed:\n{proc.stderr[-3000:]}")
    volume = lab.volume("uid65534")
    run = run_once(lab, f"{IMAGE}:job-65534", "relayer-job", "migrate", volume=volume, env=disk_env())
    check(run.rc == 0, f"migrate as 65534 failed:\n{run.output[-3000:]}")
    dropped = run.named("privileges.dropped")
    check(dropped and dropped[0]["uid"] == 65534, "the job did not run as 65534")
    check(owner_of(volume, "/data", "/data/relayer.db") == ["65534:65534"] * 2, "owner is not 65534")
    say("   ok: builds, runs as 65534:65534, the disk's database directory handed to it")


# --- checks on a single image ------------------------------------------------------------------------


def unconfigured(lab: Lab) -> None:
    say("== `docker run <job image>` with no configuration")
    run = run_once(lab, f"{IMAGE}:job")
    check(run.rc == 2, f"expected exit 2, got {run.rc}:\n{run.output}")
    error = run.finished["error"]
    check(
        "DATABASE_PATH" in error and "SNAPSHOT_STORE" in error, f"error does not name what it needs: {error}"
    )
    check(len(run.output.strip().splitlines()) == 1, f"expected one line:\n{run.output}")
    say(f"   ok: exit 2, one line: {error}")


def bytecode(lab: Lab) -> None:
    say("== start-up compiles nothing: every module the CLI imports has a valid .pyc")
    run = run_once(
        lab,
        f"{IMAGE}:job",
        "relayer-job",
        "migrations",
        "compare",
        "/app/migrations",
        "/app/migrations",
        env={"PYTHONVERBOSE": "1"},
    )
    check(run.rc == 0, f"migrations compare failed:\n{run.output[-2000:]}")
    loaded = [line for line in run.output.splitlines() if line.startswith("# code object from")]
    from_source = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    check(len(loaded) > 100 and not from_source, f"compiled at start-up: {from_source[:5]}")
    pip = run_once(lab, f"{IMAGE}:job", "python", "-m", "pip", "--version")
    check(pip.rc != 0 and "No module named pip" in pip.output, "pip is still in the image")
    say(f"   ok: {len(loaded)} modules loaded, all from .pyc; no pip in the image")


def non_root_start(lab: Lab) -> None:
    say("== started as a non-root user (docker run --user) on a root-owned disk: a hint that helps")
    volume = lab.volume("nonroot")
    run = run_once(
        lab,
        f"{IMAGE}:job",
        "relayer-job",
        "migrate",
        volume=volume,
        env=disk_env(),
        extra=("--user", f"{APP_UID}:{APP_UID}"),
    )
    check(run.rc == 4, f"expected exit 4, got {run.rc}:\n{run.output[-2000:]}")
    error = run.finished["error"]
    check(f"writable by uid {APP_UID}" in error and "start the container as root" in error, error)
    say(f"   ok: exit 4: {error}")


# --- the lifecycle ----------------------------------------------------------------------------------


def check_relayer(run: Run, *, uid: int = APP_UID) -> dict[str, Any]:
    started = run.relayer("started")
    check(len(started) == 1, f"the relayer started {len(started)} times:\n{run.output[-3000:]}")
    facts = started[0]
    check(
        facts["pid"] != 1 and facts["ppid"] == 1 and facts["pid1"] == "tini",
        f"relayer is not a child of tini: {facts}",
    )
    check(facts["uid"] == uid and facts["gid"] == uid, f"relayer runs as {facts['uid']}:{facts['gid']}")
    check(facts["would_run"] == [], f"the relayer's own runner would re-run {facts['would_run']}")
    check(facts["holds_lock"], "the relayer does not hold the disk lock (gate --hold-lock)")
    return facts


def check_stopped(run: Run, seconds: float) -> None:
    check(run.rc == 143, f"expected exit 143 (SIGTERM), got {run.rc} after {seconds:.1f} s")
    signals = [r["signal"] for r in run.relayer("signal")]
    check(signals == ["SIGTERM"], f"the relayer received {signals}")


def lifecycle(lab: Lab) -> None:
    disk = lab.volume("disk")
    seed = lab.work / "relayer.db"
    rows = build_legacy_001(seed, commands=500)
    holder = f"{RUN_ID}-seed"
    lab.containers.append(holder)
    docker("create", "--name", holder, "-v", f"{disk}:/data", f"{IMAGE}:job")
    docker("cp", str(seed), f"{holder}:/data/relayer.db")
    check(owner_of(disk, "/data", "/data/relayer.db") == ["0:0", "0:0"], "the seeded disk is not root's")

    say("== 1. first deploy on a disk that root owns (legacy database at 001, as the relayer left it)")
    run = run_once(lab, f"{IMAGE}:service", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 0, f"preflight failed:\n{run.output[-3000:]}")
    old = start_service(lab, f"{IMAGE}:service", disk)
    old.wait_healthy()
    gate = old.run()
    check(gate.finished["exit_code"] == 0, f"gate failed:\n{gate.output[-3000:]}")
    facts = check_relayer(gate)
    check(facts["counts"]["commands"] == rows["commands"], "rows lost in the first deploy")
    changed = {e["path"] for e in gate.named("ownership.changed")}
    check(changed == {"/data", "/data/relayer.db"}, f"ownership changed on {changed}")
    check(owner_of(disk, "/data", "/data/relayer.db") == [f"{APP_UID}:{APP_UID}"] * 2, "not handed over")
    say(
        f"   ok: /data and relayer.db handed to {APP_UID}; migrated to 004; relayer pid {facts['pid']}, "
        f"child of tini, uid {facts['uid']}, holds the lock, nothing left for its own runner"
    )

    say("== 2. deploy v2 (adds 005): pre-deploy, stop old, start new")
    run = run_once(lab, f"{IMAGE}:service-v2", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 0 and run.finished["would_apply"] == ["005_device_label.sql"], run.output[-3000:])
    down = time.monotonic()
    stopped, stop_s = old.stop()
    check_stopped(stopped, stop_s)
    new = start_service(lab, f"{IMAGE}:service-v2", disk)
    up = new.wait_healthy()
    gate = new.run()
    check([a["name"] for a in gate.finished["applied"]] == ["005_device_label.sql"], gate.output[-3000:])
    check(gate.finished["snapshot_id"] and gate.finished["post_migrate_snapshot_id"], "snapshots missing")
    check(not gate.named("ownership.changed"), "ownership changed again on a disk the user owns")
    check_relayer(gate)
    pre_005 = gate.finished["snapshot_id"]
    lab.figures["SIGTERM to exit, relayer running (docker stop)"] = f"{stop_s:.2f} s (exit 143)"
    lab.figures["downtime of a deploy applying one migration (old stops -> new /health)"] = (
        f"{up - down:.2f} s"
    )
    say(
        f"   ok: old stopped in {stop_s:.2f} s (exit 143, SIGTERM recorded); 005 applied; "
        f"new relayer healthy {up - down:.2f} s after the stop began"
    )

    say("== 3. second start of the same deploy (a restart): nothing to do")
    stopped, stop_s = new.stop()
    check_stopped(stopped, stop_s)
    again = start_service(lab, f"{IMAGE}:service-v2", disk)
    again.wait_healthy()
    gate = again.run()
    check(gate.finished["applied"] == [] and gate.finished["snapshot_unchanged"], gate.output[-3000:])
    check(not gate.named("snapshot.uploaded"), "a no-op start uploaded a snapshot")
    check_relayer(gate)
    say("   ok: nothing applied, snapshot unchanged (no upload), relayer started")

    say("== 4. deploy v3 (006 fails on data): blocked in pre-deploy, the running relayer untouched")
    before = again.db()
    run = run_once(lab, f"{IMAGE}:service-v3", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 7 and "006_device_platform.sql" in run.finished["error"], run.output[-3000:])
    check(again.healthy() and again.run().rc is None, "the running relayer stopped")
    check(again.db() == before, "the database changed during a blocked deploy")
    say(
        f"   ok: preflight exit 7 ({run.finished['error'][:80]}...); "
        "relayer still serving, database unchanged"
    )

    say("== 5. roll back to v1 with RESTORE_SNAPSHOT (the pre-migrate snapshot of step 2)")
    stopped, stop_s = again.stop()
    check_stopped(stopped, stop_s)
    sql(disk, "INSERT INTO repos VALUES ('after-snapshot', (SELECT id FROM admin LIMIT 1), '/x', 'x', 'now')")
    rolled = start_service(lab, f"{IMAGE}:service", disk, env={"RESTORE_SNAPSHOT": pre_005})
    rolled.wait_healthy()
    gate = rolled.run()
    check(gate.finished["restored"] == pre_005 and gate.named("restore.completed"), gate.output[-3000:])
    facts = check_relayer(gate)
    check("label" not in facts["columns"]["devices"], "the restored database still has 005's column")
    check(facts["ledger"][-1] == "004_cursor_chat_id.sql", f"ledger after rollback: {facts['ledger']}")
    check(facts["counts"]["repos"] == rows["repos"], "the row written after the snapshot survived")
    check(facts["owner"] == f"{APP_UID}:{APP_UID}", f"restored database owned by {facts['owner']}")
    say(f"   ok: restored {pre_005}, back at 004 with the data of that moment; relayer started")

    say("== 6. one-off snapshot from a second container while the relayer runs")
    run = run_once(
        lab,
        f"{IMAGE}:service",
        "relayer-job",
        "snapshot",
        "--reason",
        "manual",
        "--force",
        volume=disk,
        env={**lab.store_env(), **disk_env()},
    )
    check(run.rc == 0 and run.named("snapshot.committed"), run.output[-3000:])
    check(any(e.get("mode") == "shared" for e in run.named("lock.acquired")), "not a shared lock")
    check(rolled.healthy(), "the relayer stopped during the snapshot")
    say(f"   ok: snapshot {run.finished['snapshot_id']} beside the running relayer (shared lock)")
    stopped, stop_s = rolled.stop()
    check_stopped(stopped, stop_s)

    say("== 7. SIGTERM to the gate while it works (waiting for a lock another container holds)")
    locker = f"{RUN_ID}-locker"
    lab.containers.append(locker)
    docker(
        "run",
        "-d",
        "--name",
        locker,
        "--network=none",
        "--user",
        f"{APP_UID}:{APP_UID}",
        "-v",
        f"{disk}:/data",
        "--entrypoint",
        "python",
        f"{IMAGE}:job",
        "-c",
        "import fcntl, os, time; fd = os.open('/data/.relayer-job.lock', os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); "
        'os.write(fd, b\'{"pid": 1, "command": "a manual migrate"}\'); time.sleep(600)',
    )
    waiting = start_service(lab, f"{IMAGE}:service", disk)
    deadline = time.monotonic() + 60
    while not waiting.run().named("lock.waiting"):
        check(time.monotonic() < deadline and waiting.run().rc is None, waiting.logs()[-2000:])
        time.sleep(0.05)
    stopped, stop_s = waiting.stop()
    docker("rm", "-f", locker)
    check(stopped.rc == 143, f"expected 143, got {stopped.rc}:\n{stopped.output[-2000:]}")
    finished = stopped.finished
    check(finished["error_code"] == "stopped_by_signal" and "SIGTERM" in finished["error"], finished)
    check(not stopped.relayer("started"), "the relayer started after a stop")
    lab.figures["SIGTERM to exit, gate waiting for the lock (docker stop)"] = f"{stop_s:.2f} s (exit 143)"
    say(f"   ok: exit 143 in {stop_s:.2f} s, job.finished: {finished['error'][:90]}...")


def entrypoint_override(lab: Lab) -> None:
    say("== a platform that replaces the entrypoint (relayer-job as PID 1) still gets tini")
    disk = lab.volume("override")
    service = start_service(
        lab,
        f"{IMAGE}:service",
        disk,
        entrypoint="relayer-job",
        command=("gate", "--hold-lock", "--", "relayer"),
        env={"SNAPSHOT_STORE": f"s3://{lab.bucket}/override"},
    )
    service.wait_healthy()
    check_relayer(service.run())
    stopped, stop_s = service.stop()
    check_stopped(stopped, stop_s)
    say(f"   ok: relayer-job re-executed itself under tini; stop took {stop_s:.2f} s")


def gate_at_100_mb(lab: Lab) -> None:
    say("== gate with nothing to do on a 100 MB database")
    disk = lab.volume("big")
    store = {"SNAPSHOT_STORE": f"s3://{lab.bucket}/big"}
    run = run_once(lab, f"{IMAGE}:job", "relayer-job", "migrate", volume=disk, env=disk_env())
    check(run.rc == 0, run.output[-2000:])
    stamp = "2026-01-15T10:00:00Z"
    sql(
        disk,
        f"INSERT INTO admin (id, username, password_hash, totp_secret, created_at, updated_at) "
        f"VALUES ('a', 'ops', 'h', 't', '{stamp}', '{stamp}')",
    )
    sql(
        disk,
        f"INSERT INTO devices (id, admin_id, device_id, name, role, token_hash, registered_at, "
        f"last_seen_at) VALUES ('d', 'a', 'exec', 'x', 'executor', 'th', '{stamp}', '{stamp}')",
    )
    sql(
        disk,
        "INSERT INTO commands (id, device_id, input, status, output, created_at, updated_at) "
        "SELECT 'c' || x, 'd', 'input ' || x, 'done', hex(randomblob(600)), "
        f"'{stamp}', '{stamp}' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 73000) SELECT x FROM c)",
    )
    size = sql(disk, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")[0][0]
    first = start_service(lab, f"{IMAGE}:service", disk, env=store)
    first.wait_healthy()
    check(first.run().finished["exit_code"] == 0, "first gate at 100 MB failed")
    first.stop()
    to_exec, job_s = [], []
    for _ in range(3):
        service = start_service(lab, f"{IMAGE}:service", disk, env=store)
        service.wait_healthy()
        run = service.run()
        check(run.finished["applied"] == [] and run.finished["snapshot_unchanged"], run.output[-2000:])
        to_exec.append(check_relayer(run)["time"] - service.launched_at)
        job_s.append(run.finished["duration_s"])
        service.stop()
    lab.figures[
        f"gate to exec, nothing to do, {size / MB:.0f} MB database (docker run -> relayer starts)"
    ] = f"median {statistics.median(to_exec):.2f} s of 3 (job itself {statistics.median(job_s):.2f} s)"
    say(f"   ok: {size / MB:.0f} MB; to exec: {', '.join(f'{t:.2f}' for t in to_exec)} s")


def sizes(lab: Lab) -> None:
    def size(image: str) -> int:
        return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())

    base, job, service = size(BASE_IMAGE), size(f"{IMAGE}:job"), size(f"{IMAGE}:service")
    added = job - base
    lab.figures["image sizes"] = (
        f"base {base / MB:.1f} MB, job {job / MB:.1f} MB (+{added / MB:.1f} MB), "
        f"service with the fake relayer {service / MB:.1f} MB"
    )
    check(added < 40 * MB, f"the job image adds {added / MB:.1f} MB to its base (limit 40 MB)")


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


def main() -> int:
    started = time.monotonic()
    docker("version", "--format", "{{.Server.Version}}")
    with lab_session() as lab:
        try:
            build_images(lab)
            sizes(lab)
            unconfigured(lab)
            bytecode(lab)
            non_root_start(lab)
            lifecycle(lab)
            entrypoint_override(lab)
            gate_at_100_mb(lab)
        except CheckFailed as exc:
            say(f"FAILED: {exc}")
            return 1
        say("\nFigures (scripts/image-test.sh):")
        for name, value in lab.figures.items():
            say(f"  {name}: {value}")
    say(f"\nimage test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
