"""`gate --supervise`: the relayer (a real child that writes continuously, tests/support/writer.py)
runs under the supervisor, with real signals, real SIGKILLs, real locks and the real S3 server."""

from __future__ import annotations

import calendar
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
import zstandard

from job import priority
from tests.conftest import base_env, cli_argv, json_lines, run_cli
from tests.support.legacy import build_legacy_001
from tests.support.writer import records
from tests.test_s3_snapshots import env_for, manifests

RELAYER = "#!{python}\nfrom tests.support.writer import main\nmain()\n"


class Supervised:
    """A running `gate --supervise -- <writer>` and its log lines, collected as they come."""

    def __init__(
        self, tmp_path: Path, env: dict[str, str], *flags: str, stdin: IO[Any] | None = None
    ) -> None:
        relayer = tmp_path / "relayer"
        relayer.write_text(RELAYER.format(python=sys.executable))
        relayer.chmod(0o755)
        self.record = tmp_path / "writer.jsonl"
        self.db = Path(env["DATABASE_PATH"])
        self.proc = subprocess.Popen(
            cli_argv("gate", "--supervise", *flags, "--", str(relayer)),
            env={**env, "WRITER_RECORD": str(self.record)},
            cwd=tmp_path,
            stdin=stdin or subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.extend(json_lines(line))

    def named(self, name: str, *, after: str | None = None) -> list[dict[str, Any]]:
        """Events called `name`, only those after the first `after` event if given."""
        events = list(self.events)
        if after is not None:
            marks = [i for i, e in enumerate(events) if e.get("event") == after]
            events = events[marks[0] + 1 :] if marks else []
        return [e for e in events if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1, *, after: str | None = "supervisor.started") -> None:
        deadline = time.monotonic() + 90
        while len(self.named(name, after=after)) < count:
            assert self.proc.poll() is None, f"exited before {count} x {name}:\n{self.output()}"
            assert time.monotonic() < deadline, f"never {count} x {name}:\n{self.output()}"
            time.sleep(0.02)

    def writer(self, kind: str) -> list[dict[str, Any]]:
        return records(self.record, kind)

    def wait_for_writer(self, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while not self.writer(kind):
            assert time.monotonic() < deadline and self.proc.poll() is None, self.output()
            time.sleep(0.02)
        return self.writer(kind)[0]

    def finish(self) -> int:
        rc = self.proc.wait(timeout=90)
        self._reader.join(timeout=10)
        return rc

    def output(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-40:])


def service_env(tmp_path: Path, store: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A migrated-to-be legacy database with some data, and a store (a file store by default)."""
    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_legacy_001(db, commands=300)
    env = store or base_env(SNAPSHOT_STORE=f"file:{tmp_path / 'store'}")
    return {**env, "DATABASE_PATH": str(db), **extra}


def rows(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT token_hash FROM bootstrap_devices ORDER BY 1")]
    finally:
        conn.close()


def alive(pid: int) -> bool:
    """Running (a zombie has stopped for good, whoever reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def s3_snapshot_rows(s3_server, bucket: str, snapshot_id: str, tmp_path: Path) -> list[str]:
    """The writer's rows inside a snapshot, downloaded with an independent client."""
    key = f"relayer/snapshots/{snapshot_id}/relayer.db.zst"
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    copy = tmp_path / f"{snapshot_id}.db"
    copy.write_bytes(zstandard.ZstdDecompressor().decompress(body))
    return rows(copy)


def holds_the_last_write(snapshot_rows: list[str], sup: Supervised) -> None:
    """The snapshot is the database exactly as the stopped writer left it, its last write included
    (the writer records the last write it saw return; one more may have committed as the signal
    arrived)."""
    live = rows(sup.db)
    [received] = sup.writer("signal")
    assert snapshot_rows == live
    assert live[-1] >= f"writer-{received['last_committed']:09d}"


# --- the scenarios, with the real S3 server ------------------------------------------------


@pytest.mark.s3
def test_periodic_snapshots_appear_and_skip_the_upload_when_unchanged(s3_server, bucket, tmp_path) -> None:
    env = service_env(tmp_path, env_for(s3_server, bucket), WRITER_ROWS="25")
    sup = Supervised(tmp_path, env, "--snapshot-interval", "1s")
    sup.wait_for_writer("rows")  # the writer is done: from now on the database does not change
    sup.wait_for("snapshot.unchanged", 2, after="supervisor.started")
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish() == 143, sup.output()

    periodic = [m for m in manifests(s3_server, bucket) if m["reason"] == "periodic"]
    assert periodic, "no periodic snapshot was committed"
    for name in ("snapshot.uploaded", "snapshot.committed"):  # once unchanged, nothing uploaded
        assert not sup.named(name, after="snapshot.unchanged"), sup.output()
    newest = max(periodic, key=lambda m: str(m["id"]))
    assert len(s3_snapshot_rows(s3_server, bucket, str(newest["id"]), tmp_path)) == 25
    assert [m["reason"] for m in manifests(s3_server, bucket)].count("shutdown") == 0  # unchanged
    assert sup.named("snapshot.unchanged", after="supervisor.child_exited"), "no final check"
    relayer_nice = sup.wait_for_writer("started")["nice"]
    beside = sup.named("snapshot.committed", after="supervisor.started")
    assert beside, sup.output()
    # Beside the relayer, the copy holds SQLite's read lock: at the relayer's priority; the rest
    # yields to the relayer. Before it started (the deploy's snapshots) nothing yields.
    assert beside[0]["priority"] == {"copy": relayer_nice, "compress": relayer_nice + 10}
    assert sup.named("snapshot.yielding", after="supervisor.started")[0]["to"][0].startswith("pid ")
    before = [e for e in sup.named("snapshot.committed") if e not in beside]
    assert before and all(e["priority"] == {"copy": relayer_nice, "compress": relayer_nice} for e in before)


@pytest.mark.s3
def test_a_busy_writer_never_fails_and_sigterm_ends_with_its_last_write(s3_server, bucket, tmp_path) -> None:
    env = service_env(tmp_path, env_for(s3_server, bucket), SNAPSHOT_RETENTION="last=2")
    sup = Supervised(tmp_path, env, "--snapshot-interval", "1s")
    sup.wait_for("snapshot.committed", 3)  # three periodic snapshots while it writes
    assert sup.wait_for_writer("started")["journal_mode"] == "delete"  # the relayer's rollback journal
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish() == 143, sup.output()

    assert sup.writer("error") == [], "a write failed (SQLITE_BUSY?) during a snapshot"
    [received] = sup.writer("signal")
    assert received["signal"] == "SIGTERM"
    [final] = sup.named("snapshot.committed", after="supervisor.child_exited")
    holds_the_last_write(s3_snapshot_rows(s3_server, bucket, final["snapshot_id"], tmp_path), sup)
    kept = sorted(manifests(s3_server, bucket), key=lambda m: str(m["id"]))
    assert [m["reason"] for m in kept] == ["periodic", "shutdown"]  # SNAPSHOT_RETENTION=last=2
    assert kept[-1]["id"] == final["snapshot_id"]
    assert sup.named("retention.applied", after="supervisor.started")


def mid_periodic_upload(s3_server, bucket: str, proxy, tmp_path: Path) -> Supervised:
    """A supervised writer whose first periodic snapshot is stuck uploading its data object."""
    env = service_env(tmp_path, env_for(s3_server, bucket, proxy.endpoint))
    sup = Supervised(tmp_path, env, "--snapshot-interval", "1s")
    sup.wait_for_writer("started")
    sup.wait_for("supervisor.started", after=None)
    rule = proxy.add_rule("PUT", r"relayer\.db\.zst$", "stall", stall_seconds=5)
    deadline = time.monotonic() + 60
    while rule.fired == 0:
        assert time.monotonic() < deadline, "no periodic upload started"
        time.sleep(0.02)
    return sup


@pytest.mark.s3
def test_sigkill_of_the_supervisor_mid_snapshot_takes_the_relayer_down_and_commits_nothing(
    s3_server, bucket, proxy, tmp_path
) -> None:
    sup = mid_periodic_upload(s3_server, bucket, proxy, tmp_path)
    committed_before = {str(m["id"]) for m in manifests(s3_server, bucket)}
    sup.proc.kill()  # SIGKILL while the periodic snapshot's data object is in flight
    assert sup.finish() == -signal.SIGKILL

    writer = sup.writer("started")[0]["pid"]
    deadline = time.monotonic() + 30
    while alive(writer) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(writer), "the relayer kept running without its supervisor"
    written = rows(sup.db)
    time.sleep(0.3)
    assert rows(sup.db) == written, "something still writes the database"
    listed = run_cli("snapshots", "list", "--json", env=env_for(s3_server, bucket))
    assert {r["id"] for r in json.loads(listed.stdout)} == committed_before
    assert {str(m["id"]) for m in manifests(s3_server, bucket)} == committed_before
    conn = sqlite3.connect(sup.db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


@pytest.mark.s3
def test_sigterm_mid_periodic_snapshot_gives_way_to_the_final_one(s3_server, bucket, proxy, tmp_path) -> None:
    sup = mid_periodic_upload(s3_server, bucket, proxy, tmp_path)
    sup.proc.send_signal(signal.SIGTERM)  # the periodic snapshot's data object is in flight
    assert sup.finish() == 143, sup.output()

    [final] = sup.named("snapshot.committed", after="supervisor.child_exited")
    reasons = {str(m["id"]): m["reason"] for m in manifests(s3_server, bucket)}
    assert reasons[final["snapshot_id"]] == "shutdown"
    assert "periodic" not in reasons.values(), "the interrupted periodic snapshot was committed"
    holds_the_last_write(s3_snapshot_rows(s3_server, bucket, final["snapshot_id"], tmp_path), sup)


# --- signals, exit codes, what the relayer sees ----------------------------------------------------


def test_the_relayer_sees_what_exec_would_give_it_and_exits_with_its_own_code(tmp_path: Path) -> None:
    env = service_env(tmp_path, WRITER_ROWS="5", WRITER_MARK="same environment")
    stdin = tmp_path / "stdin.txt"
    stdin.write_text("")
    with stdin.open() as handle:
        sup = Supervised(tmp_path, env, "--snapshot-interval", "1h", stdin=handle)
        started = sup.wait_for_writer("started")
        assert sup.proc.stdout is not None
        assert started["ppid"] == sup.proc.pid and started["cwd"] == str(tmp_path)
        assert started["stdin"] == str(stdin) and started["mark"] == "same environment"
        assert started["stdout"] == f"pipe:[{os.fstat(sup.proc.stdout.fileno()).st_ino}]"
        assert started["holds_lock"]
        sup.wait_for("supervisor.started", after=None)
        blocked = run_cli("migrate", "--lock-timeout", "5", env=env)
        assert blocked.rc == 3 and blocked.finished["error_code"] == "lock_held_by_relayer"
        assert "gate --supervise" in blocked.error and str(sup.proc.pid) in blocked.error
        manual = run_cli("snapshot", "--reason", "manual", "--lock-timeout", "5", env=env)
        assert manual.rc == 0, manual.stdout  # shared lock: beside the running relayer

        sup.proc.send_signal(signal.SIGUSR1)  # not a stop: forwarded, and it ends the writer
        assert sup.finish() == 128 + signal.SIGUSR1
    assert [r["signal"] for r in sup.writer("signal")] == ["SIGUSR1"]
    assert sup.named("supervisor.signal_forwarded")[0]["signal"] == "SIGUSR1"
    [exited] = sup.named("supervisor.child_exited")
    assert exited["level"] == "warning" and "no final snapshot" in exited["note"]
    assert not sup.named("snapshot.committed", after="supervisor.child_exited")
    assert not sup.named("snapshot.unchanged", after="supervisor.child_exited")


def test_a_relayer_that_exits_on_its_own_ends_the_supervisor_at_once(tmp_path: Path) -> None:
    env = service_env(tmp_path, WRITER_ROWS="5", WRITER_EXIT="3")
    sup = Supervised(tmp_path, env)
    assert sup.finish() == 3, sup.output()
    assert sup.named("supervisor.exited")[0]["exit_code"] == 3
    assert not [e for e in sup.events if str(e.get("event")).startswith("snapshot.shutdown")]
    assert not sup.named("snapshot.committed", after="supervisor.started")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_sigint_and_sighup_are_stops_too(tmp_path: Path, signum: int, code: int) -> None:
    sup = Supervised(tmp_path, service_env(tmp_path), "--snapshot-interval", "0")
    sup.wait_for_writer("started")
    sup.wait_for("supervisor.started", after=None)
    sup.proc.send_signal(signum)
    assert sup.finish() == code, sup.output()
    assert [r["signal"] for r in sup.writer("signal")] == [signal.Signals(signum).name]
    [final] = sup.named("snapshot.committed", after="supervisor.child_exited")
    manifest = json.loads(
        (tmp_path / "store" / "snapshots" / final["snapshot_id"] / "manifest.json").read_text()
    )
    assert manifest["reason"] == "shutdown"
    assert not sup.named("snapshot.periodic_scheduled"), "--snapshot-interval 0 still scheduled snapshots"


def test_no_shutdown_snapshot_with_a_zero_budget(tmp_path: Path) -> None:
    env = service_env(tmp_path, SHUTDOWN_SNAPSHOT_BUDGET="0")
    sup = Supervised(tmp_path, env)
    sup.wait_for_writer("started")
    sup.wait_for("supervisor.started", after=None)
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish() == 143
    assert "SHUTDOWN_SNAPSHOT_BUDGET" in sup.named("snapshot.shutdown_skipped")[0]["reason"]
    assert not sup.named("snapshot.committed", after="supervisor.child_exited")


def test_a_failing_periodic_snapshot_is_logged_retried_and_never_stops_the_relayer(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    store = tmp_path / "store"
    sup = Supervised(tmp_path, env, "--snapshot-interval", "1s")
    sup.wait_for_writer("started")
    sup.wait_for("supervisor.started", after=None)
    store.rename(tmp_path / "store-away")
    store.write_text("not a directory: every write into the store fails")
    sup.wait_for("recovery_point.overdue")  # more than two intervals without a snapshot
    failed = sup.named("snapshot.periodic_failed")
    assert failed[0]["error_code"] == "store_error" and failed[0]["exit_code"] == 6
    assert sup.proc.poll() is None and not sup.writer("signal")
    store.unlink()
    (tmp_path / "store-away").rename(store)
    done = len(sup.named("snapshot.committed", after="supervisor.started"))
    sup.wait_for("snapshot.committed", done + 1)  # retried at the next interval
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish() == 143
    assert sup.writer("error") == []


def test_bad_durations_are_refused_before_anything(tmp_path: Path) -> None:
    env = service_env(tmp_path, SNAPSHOT_INTERVAL="15 minutes")
    bad = run_cli("gate", "--supervise", "--", "true", env=env)
    assert bad.rc == 2 and "SNAPSHOT_INTERVAL" in bad.error and "15m" in bad.error
    env["SNAPSHOT_INTERVAL"] = "15m"
    flag = run_cli("gate", "--supervise", "--shutdown-snapshot-budget", "-1", "--", "true", env=env)
    assert flag.rc == 2 and "--shutdown-snapshot-budget" in flag.error
    assert not (tmp_path / "store").exists()


def test_lower_this_thread_leaves_the_other_threads_alone() -> None:
    def nice_of(tid: int) -> int:
        return int(Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    seen: dict[str, Any] = {}

    def background() -> None:
        seen["applied"] = priority.lower_this_thread()
        seen["again"] = priority.lower_this_thread()  # a pool thread's second task
        seen["nice"] = nice_of(threading.get_native_id())

    before = nice_of(threading.get_native_id())
    worker = threading.Thread(target=background)
    worker.start()
    worker.join()
    assert seen["nice"] == min(19, before + priority.NICE) == seen["applied"]["nice"]
    assert seen["again"] == seen["applied"]
    assert nice_of(threading.get_native_id()) == before


def test_a_snapshot_beside_another_process_yields_once(tmp_path: Path) -> None:
    """Compression and checks are lowered once each, even when the copy is done so soon that one
    pool thread runs both (it was once lowered twice, to nice +19)."""
    env = service_env(tmp_path)
    db = Path(env["DATABASE_PATH"])
    beside = sqlite3.connect(db)
    beside.execute("SELECT count(*) FROM sqlite_master").fetchone()
    try:
        taken = [run_cli("snapshot", "--force", env=env) for _ in range(4)]
    finally:
        beside.close()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for run in taken:
        assert run.rc == 0, run.error
        assert run.event("snapshot.yielding")["to"][0].startswith(f"pid {os.getpid()} ")
        committed = run.event("snapshot.committed")
        assert committed["priority"] == {"copy": base, "compress": min(19, base + priority.NICE)}


# --- recovery point in status ----------------------------------------------------------------------


def test_status_shows_the_age_of_the_newest_restorable_snapshot(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    taken = run_cli("snapshot", env=env)
    assert taken.rc == 0
    manifest = json.loads(
        (tmp_path / "store" / "snapshots" / taken.finished["snapshot_id"] / "manifest.json").read_text()
    )
    created = calendar.timegm(time.strptime(manifest["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
    asked = time.time()
    report = run_cli("status", "--json", env=env)
    answered = time.time()
    status = json.loads(report.stdout)
    assert asked - created - 1 <= status["recovery_point_age_s"] <= answered - created + 1
    assert status["last_snapshot"]["age_s"] == status["recovery_point_age_s"]
    text = run_cli("status", env=env).stdout
    assert f"{taken.finished['snapshot_id']} (manual, schema 1), taken " in text and " ago" in text


@pytest.mark.parametrize("beside", [True, False])
def test_compression_waits_for_the_copy_only_beside_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    """Beside another process the copy, which holds SQLite's read lock, has the machine to itself:
    compression starts once it is made, and the copy is the gentle one. With nobody beside, they
    overlap."""
    from job import snapshot
    from job.config import S3Options
    from job.deadline import Deadline
    from job.store import open_store

    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_legacy_001(db, commands=300)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); sys.stdin.read()", db],
        stdin=subprocess.PIPE,
    )
    seen: dict[str, Any] = {}
    real_compress = snapshot.compress

    def spy(source: Path, upload: Any, *, deadline: Deadline, copying: snapshot.Copying) -> Any:
        seen["copy_done_at_start"] = copying.done
        seen["nice"] = priority.nice_of_this_thread()
        return real_compress(source, upload, deadline=deadline, copying=copying)

    real_copy = snapshot._copy

    def slow_copy(*args: Any, gentle: bool) -> Any:
        seen["gentle"] = gentle
        time.sleep(0.3)  # a copy that takes a while, as of a large database
        return real_copy(*args, gentle=gentle)

    monkeypatch.setattr(snapshot, "compress", spy)
    monkeypatch.setattr(snapshot, "_copy", slow_copy)
    try:
        deadline_s = time.monotonic() + 10
        while beside and not inuse_sees(db, holder.pid):
            assert time.monotonic() < deadline_s, "the holder never opened the database"
            time.sleep(0.02)
        if not beside:
            holder.communicate(b"", timeout=10)
        store = open_store(f"file:{tmp_path / 'store'}", S3Options(), Deadline(60))
        facts = snapshot.create(db, store, reason="manual", deadline=Deadline(60), force=True)
    finally:
        if holder.poll() is None:
            holder.communicate(b"", timeout=10)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert facts["priority"]["compress"] == seen["nice"]
    assert seen["gentle"] is beside  # copied without the lock, then compared and patched under it
    if beside:
        assert seen["copy_done_at_start"] is True
        assert seen["nice"] == min(19, base + priority.NICE)
    else:
        assert seen["copy_done_at_start"] is False
        assert seen["nice"] == base


def inuse_sees(db: Path, pid: int) -> bool:
    from job import inuse

    return any(h.startswith(f"pid {pid} ") for h in inuse.seen_open(db))
