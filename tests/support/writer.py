#!/usr/bin/env python3
"""A stand-in for the relayer under `gate --supervise`: it writes to the database continuously, the
way the relayer does (a connection with a 5 s busy timeout, the database's rollback journal, one
autocommit INSERT per request), and records what happens to it as JSON lines in $WRITER_RECORD.

Records: `started` (pid, parent, nice value, whether it holds the disk lock, working directory,
what its stdin and stdout are), `error` for every failed write (a SQLITE_BUSY would show here),
`rows` when it stops writing, and `signal` for every signal, with the last committed row. Like
the relayer it has no shutdown handling: after recording a signal it lets the signal's default
action end it. WRITER_ROWS=N stops writing after N rows, then it idles until stopped, or exits
with WRITER_EXIT when that is set; WRITER_PAUSE_S is the pause between writes (default 0.005).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

BUSY_TIMEOUT_S = 5.0  # the relayer's (rusqlite's default)
last_committed = 0


def record(kind: str, **facts: Any) -> None:
    line = json.dumps({"writer": kind, "time": time.time(), **facts}) + "\n"
    fd = os.open(os.environ["WRITER_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def records(path: Path, kind: str) -> list[dict[str, Any]]:
    """What a writer recorded of one kind, in order."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["writer"] == kind]


def on_signal(signum: int, _frame: FrameType | None) -> None:
    record("signal", signal=signal.Signals(signum).name, last_committed=last_committed)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def holds_lock() -> bool:
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if fd.readlink().name == ".relayer-job.lock":
                return True
        except OSError:  # the directory listing's own descriptor, closed by now
            continue
    return False


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    conn = sqlite3.connect(os.environ["DATABASE_PATH"], timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    record(
        "started",
        pid=os.getpid(),
        ppid=os.getppid(),
        nice=os.getpriority(os.PRIO_PROCESS, 0),
        holds_lock=holds_lock(),
        cwd=str(Path.cwd()),
        stdin=str(Path("/proc/self/fd/0").readlink()),
        stdout=str(Path("/proc/self/fd/1").readlink()),
        mark=os.environ.get("WRITER_MARK"),
        journal_mode=conn.execute("PRAGMA journal_mode").fetchone()[0],
    )
    rows = int(os.environ.get("WRITER_ROWS", "0")) or sys.maxsize
    pause = float(os.environ.get("WRITER_PAUSE_S", "0.005"))
    global last_committed  # noqa: PLW0603 -- read by the signal handler
    n = 0
    while n < rows:
        try:
            conn.execute(
                "INSERT INTO bootstrap_devices (token_hash, created_at) VALUES (?, ?)",
                (f"writer-{n + 1:09d}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
        except sqlite3.Error as exc:
            record("error", error=str(exc), code=getattr(exc, "sqlite_errorname", None))
        else:
            n += 1
            last_committed = n
        time.sleep(pause)
    record("rows", rows=n)
    if os.environ.get("WRITER_EXIT"):
        sys.exit(int(os.environ["WRITER_EXIT"]))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
