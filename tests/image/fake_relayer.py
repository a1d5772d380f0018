#!/usr/bin/env python3
"""A stand-in for the relayer binary in image tests (installed as /usr/local/bin/relayer).

Like the real relayer it has no SIGTERM handling of its own (a signal is recorded, then its
default action applies, which PID 1 would not get), serves GET /health on $HOST:$PORT, and reads
the database at $DATABASE_PATH. It prints one JSON line per fact, {"fake_relayer": ...}, to stdout
(the container log): its pid, parent (and the parent's command and parent), uid, gid, what PID 1
is, the database it sees, which migration files its own start-up runner would still apply,
whether it holds the disk lock, and every signal it gets. GET /db answers the same database facts
while it runs; GET /write inserts one row as the relayer would (busy timeout 5 s) and answers the
number of rows written so far.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any


def record(kind: str, **facts: Any) -> None:
    print(json.dumps({"fake_relayer": kind, "time": time.time(), **facts}), flush=True)


def database_facts() -> dict[str, Any]:
    path = Path(os.environ.get("DATABASE_PATH", "data/relayer.db"))
    if not path.exists():
        return {"db": str(path), "exists": False}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        ledger = [r[0] for r in conn.execute("SELECT name FROM _schema_migrations ORDER BY name")]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        columns = {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
    finally:
        conn.close()
    migrations = Path(os.environ.get("MIGRATIONS_DIR", "migrations"))
    files = sorted(p.name for p in migrations.glob("*.sql")) if migrations.is_dir() else []
    st = path.stat()
    return {
        "db": str(path),
        "exists": True,
        "owner": f"{st.st_uid}:{st.st_gid}",
        "ledger": ledger,
        "would_run": [f for f in files if f not in ledger],  # the relayer's own runner's view
        "counts": counts,
        "columns": columns,
    }


def holds_lock() -> bool:
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if str(fd.readlink()).endswith(".relayer-job.lock"):
                return True
        except OSError:
            continue
    return False


def process(pid: int) -> dict[str, Any]:
    """A process's command line and parent, from /proc."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "command": [Path(command[0].decode()).name, *(c.decode() for c in command[1:])],
        "ppid": int(stat[1]),
    }


def write_row() -> int:
    """One write as the relayer makes them: an autocommit INSERT with a 5 s busy timeout."""
    conn = sqlite3.connect(os.environ.get("DATABASE_PATH", "data/relayer.db"), timeout=5)
    try:
        with conn:
            conn.execute(
                "INSERT INTO bootstrap_devices (token_hash, created_at) VALUES (?, ?)",
                (f"fake-{time.time_ns()}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
        return int(conn.execute("SELECT count(*) FROM bootstrap_devices").fetchone()[0])
    finally:
        conn.close()


def on_signal(signum: int, _frame: FrameType | None) -> None:
    record("signal", signal=signal.Signals(signum).name)
    signal.signal(signum, signal.SIG_DFL)  # then behave as if there were no handler at all
    os.kill(os.getpid(), signum)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body, kind = b"ok", "text/plain"
        elif self.path == "/db":
            body, kind = json.dumps(database_facts()).encode(), "application/json"
        elif self.path == "/write":
            body, kind = str(write_row()).encode(), "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    pid1 = Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode()
    record(
        "started",
        pid=os.getpid(),
        ppid=os.getppid(),
        parent=process(os.getppid()),
        uid=os.getuid(),
        gid=os.getgid(),
        pid1=Path(pid1).name,
        holds_lock=holds_lock(),
        **database_facts(),
    )
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080"))), Handler
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
