"""What a first-time operator meets: the demo's next steps, where errors and usage go, status exit
codes and columns, console log order, exit 3's error codes, and the local S3 script's lifecycle."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import base_env, run_cli
from tests.support.legacy import REPO, build_legacy_001, relayer_startup


def test_demo_prints_next_steps_that_work_from_any_shell(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {k: v for k, v in base_env().items() if k != "LOG_FORMAT"}
    demo = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=REPO,
        env={**env, "DEMO_DIR": str(demo_dir)},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    source = re.search(r"^\s*(source \S+)$", demo.stdout, re.M)
    assert source, demo.stdout
    next_steps = demo.stdout.split("\nNext:", 1)[1]
    commands = [
        line.split("#")[0].strip()
        for line in next_steps.splitlines()
        if line.strip().startswith("relayer-job ")
    ]
    assert {"relayer-job status", "relayer-job snapshots list", "relayer-job deploy"} <= set(commands)
    assert any(c.startswith("relayer-job restore ") for c in commands)
    # A fresh shell elsewhere with nothing of the job's configuration: the printed line is enough.
    shell_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}

    def in_shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"{source[1]} && {command}"],
            cwd=tmp_path,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = in_shell("relayer-job snapshots list --json")
    assert listed.returncode == 0, listed.stderr
    snapshot_id = json.loads(listed.stdout)[0]["id"]
    for command in commands:
        done = in_shell(command.replace(" ID ", f" {snapshot_id} "))
        assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
    status = in_shell("relayer-job status --json")
    report = json.loads(status.stdout)
    assert report["db"] == str(demo_dir / "data" / "relayer.db") and report["schema_version"] == 4


@pytest.mark.parametrize(
    ("args", "env", "usage"),
    [
        pytest.param(("status", "--json", "--no-such-flag"), {}, True, id="status-bad-flag"),
        pytest.param(("snapshots", "list", "--json", "--keep-last", "1"), {}, True, id="list-bad-flag"),
        pytest.param(("snapshots", "--json"), {}, True, id="snapshots-no-action"),
        pytest.param(("status", "--json"), {"JOB_DEADLINE": "soon"}, False, id="status-bad-env"),
        pytest.param(("snapshots", "list", "--json"), {"LOG_LEVEL": "loud"}, False, id="list-bad-env"),
        pytest.param(("status", "--log-format", "yaml"), {}, False, id="status-bad-log-format"),
    ],
)
def test_report_commands_keep_stdout_for_the_report_even_on_early_errors(args, env, usage) -> None:
    run = run_cli(*args, env=base_env(**env))
    assert run.rc == 2
    assert run.stdout == "", run.stdout
    assert run.finished["error_code"] == "usage_error"  # the one job.finished, on stderr
    assert run.stderr.startswith("usage: relayer-job") == usage, run.stderr


def test_bad_flags_print_usage_and_the_error_on_stderr() -> None:
    run = run_cli("migrate", "--dry-rn")
    assert run.rc == 2
    assert run.stderr.startswith("usage: relayer-job migrate [-h]"), run.stderr
    error = run.stderr.rstrip().splitlines()[-1]
    assert error == "relayer-job migrate: error: unrecognized arguments: --dry-rn"
    assert "--dry-rn" in run.finished["error"]  # and the one job.finished, where logs go (stdout)
    assert '"job.finished"' in run.stdout


def test_status_exits_with_the_code_of_what_it_found_and_still_reports(s3_server, tmp_path) -> None:
    db = tmp_path / "data" / "relayer.db"
    store = f"file:{tmp_path / 'store'}"
    missing = run_cli("status", "--json", "--db", str(db), "--store", store)
    report = json.loads(missing.stdout)
    assert missing.rc == 5 and report["exit_code"] == 5 and report["exists"] is False
    assert report["pending"] and str(report["last_snapshot"]).startswith("none in file://")
    assert "does not exist" in missing.error and "DATABASE_PATH" in missing.error

    assert run_cli("migrate", "--db", str(db)).rc == 0
    bad_url = run_cli("status", "--json", "--db", str(db), "--store", "s3:/no-bucket")
    report = json.loads(bad_url.stdout)
    assert bad_url.rc == 2 and report["schema_version"] == 4 and "SNAPSHOT_STORE" in bad_url.error

    env = base_env(**s3_server.env(), SNAPSHOT_STORE="s3://no-such-bucket-for-status/x")
    failing = run_cli("status", "--db", str(db), env=env)
    assert failing.rc == 6 and failing.finished["error_code"] == "store_error"
    assert re.search(r"^schema version\s+4$", failing.stdout, re.M), failing.stdout
    assert re.search(r"^problem\s+exit 6: .*bucket", failing.stdout, re.M), failing.stdout

    both = run_cli("status", "--json", "--store", "s3:/no-bucket", env=base_env(DATABASE_PATH=str(db) + "x"))
    report = json.loads(both.stdout)
    assert both.rc == 2 and sorted(p["exit_code"] for p in report["problems"]) == [2, 5]


def test_status_columns_line_up_whatever_the_lengths(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for path in sorted((REPO / "migrations").glob("*.sql")):
        (migrations / path.name).write_bytes(path.read_bytes())
    long_name = "005_a_much_longer_migration_name_than_the_others.sql"
    (migrations / long_name).write_text("CREATE TABLE extra (id TEXT PRIMARY KEY);\n")
    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=2)  # 001 recorded by the relayer: no time, no checksum
    relayer_startup(db, REPO / "migrations")  # 002-004 too
    assert run_cli("migrate", "--db", str(db), "--migrations", str(migrations)).rc == 0
    (migrations / "006_x.sql").write_text("CREATE TABLE x (id TEXT);\n")
    text = run_cli("status", "--db", str(db), "--migrations", str(migrations)).stdout
    lines = text.splitlines()
    value_columns = {len(m[1]) for line in lines if (m := re.match(r"^(\S+(?: \S+)?\s+)\S", line))}
    assert len(value_columns) == 1, text
    applied = [line for line in lines if line.startswith("applied")]
    assert len(applied) == 5  # 001-004 by the relayer (no time), 005 by the job
    assert len({line.index("0") for line in applied}) == 1, text  # the names
    assert len({line.index("relayer") for line in applied}) == 1, text  # who applied it


def test_console_logs_lead_with_event_and_error(tmp_path: Path) -> None:
    bogus = tmp_path / "relayer.db"
    bogus.write_bytes(b"not a database" * 300)
    run = run_cli("migrate", "--db", str(bogus), env=base_env(LOG_FORMAT="console"))
    assert run.rc == 5
    [finished] = [line for line in run.stdout.splitlines() if " job.finished " in line]
    facts = finished.split(" job.finished ", 1)[1].strip()
    assert facts.startswith("error="), finished
    order = [facts.index(f" {key}=") for key in ("error_code", "outcome", "exit_code", "duration_s")]
    assert order == sorted(order), finished  # as the code gave them, not alphabetical
    assert facts.endswith("command=migrate") and " run_id=" in facts, finished


HOLDER = """
import sys, time
from pathlib import Path
from job.lock import RELAYER_HOLDER, acquire
lock = acquire(Path(sys.argv[1]), timeout=5, command="test")
if sys.argv[2] == "relayer":
    lock.share(f"relayer ({RELAYER_HOLDER})")
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("holder", "error_code"),
    [("relayer", "lock_held_by_relayer"), ("another-job", "lock_timeout")],
)
def test_exit_3_says_why_the_lock_was_not_acquired(tmp_path: Path, holder: str, error_code: str) -> None:
    db = tmp_path / "relayer.db"
    lock_file = tmp_path / ".relayer-job.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file), holder],
        cwd=REPO,
        env=base_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        while proc.stdout.readline() not in ("held\n", ""):
            continue
        run = run_cli("migrate", "--db", str(db), "--lock-timeout", "0.3")
    finally:
        proc.kill()
        proc.wait()
    assert run.rc == 3 and run.finished["error_code"] == error_code, run.error


def _weed_pids(data_dir: Path) -> list[int]:
    """The SeaweedFS processes serving `data_dir`, from /proc."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"-dir={data_dir}".encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def _start_dev_s3(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """scripts/dev-s3.sh, and what it printed once the server was ready."""
    proc = subprocess.Popen(
        ["bash", "scripts/dev-s3.sh", str(data_dir)],
        cwd=REPO,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    printed = b""
    limit = time.monotonic() + 90
    while printed.count(b"SNAPSHOT_STORE") < 2 and time.monotonic() < limit:
        if select.select([fd], [], [], 1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            printed += chunk
    return proc, printed.decode()


def _exports(printed: str) -> dict[str, str]:
    """The variables printed for HTTPS, as a shell would set them."""
    https = printed.split("over HTTPS", 1)[1]
    lines = [line.removeprefix("export ") for line in https.splitlines() if line.startswith("export ")]
    return {key: shlex.split(value)[0] for key, _, value in (line.partition("=") for line in lines)}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server's processes in /proc")
def test_dev_s3_stops_with_sigterm_and_keeps_its_endpoint(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-s3"
    outputs = []
    try:
        for _ in range(2):
            proc, printed = _start_dev_s3(data_dir)
            assert "AWS_CA_BUNDLE" in printed and _weed_pids(data_dir), printed
            outputs.append(printed)
            if len(outputs) == 2:  # restarted on the same data dir: what it printed still works
                assert outputs[0] == outputs[1]
                https = _exports(printed)
                assert https["AWS_ENDPOINT_URL_S3"].startswith("https://")
                listed = run_cli("snapshots", "list", env=base_env(**https))
                assert listed.rc == 0, listed.stdout + listed.stderr
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            assert _weed_pids(data_dir) == [], "SeaweedFS outlived dev-s3.sh"
    finally:
        for pid in _weed_pids(data_dir):
            os.kill(pid, signal.SIGKILL)


def test_sqlites_own_lock_is_exit_3_database_locked(tmp_path: Path) -> None:
    """A write lock held by another connection is neither a lock timeout nor the relayer's lock."""
    import sqlite3

    from job.errors import sqlite_cause

    db = tmp_path / "relayer.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        writer.close()
    cause = sqlite_cause(caught.value, "migrating")
    assert cause is not None and cause.exit_code == 3 and cause.error_code == "database_locked"
