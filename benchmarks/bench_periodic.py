"""The cost of one periodic snapshot of `gate --supervise`, and how fast a SIGTERM reaches the relayer.

    .venv/bin/python benchmarks/bench_periodic.py [--sizes-mb 100,1024] [--store URL]

For each size: one periodic snapshot taken the way the supervisor takes it (`snapshot.create` on a
background thread, which lowers the priority of its compression and checks; the retention left
out) while a writer process inserts rows as the relayer does (5 s busy timeout, rollback
journal): its wall time, the CPU time of the whole process, the bytes stored, and the writer's
longest wait for one INSERT and its failed writes during the snapshot. Then the same once the
database stopped changing (nothing stored).
Last, SIGTERM to a running `gate --supervise` until the relayer's handler runs (median of 5).
The store is a directory in a scratch folder unless --store names one; the figures depend on the
machine, nothing is checked.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relayer_db import build  # benchmarks/ is this script's own directory

from job import log, snapshot
from job.config import S3Options
from job.deadline import Deadline
from job.store import open_store
from tests.conftest import base_env, cli_argv
from tests.support.legacy import REPO, build_legacy_001
from tests.support.writer import records

WRITER = """
import json, sqlite3, sys, time
from pathlib import Path
conn = sqlite3.connect(sys.argv[1], timeout=5.0, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY, at REAL, body BLOB)")
print("ready", flush=True)
longest, errors, rows = 0.0, 0, 0
while not Path(sys.argv[2]).read_text():
    started = time.perf_counter()
    try:
        conn.execute("INSERT INTO writes (at, body) VALUES (?, randomblob(200))", (time.time(),))
        rows += 1
    except sqlite3.OperationalError:
        errors += 1
    longest = max(longest, time.perf_counter() - started)
    time.sleep(0.005)
print(json.dumps({"longest_wait_s": longest, "errors": errors, "rows": rows}), flush=True)
"""


def one_snapshot(db: Path, store_url: str) -> dict[str, Any]:
    """One periodic snapshot on a background thread, as the supervisor takes it (the snapshot
    lowers its own compression and checks); its facts, wall and process CPU time."""
    out: dict[str, Any] = {}

    def work() -> None:
        deadline = Deadline(3600)
        store = open_store(store_url, S3Options(), deadline)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out["facts"] = snapshot.create(db, store, reason="periodic", deadline=deadline)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out["wall_s"] = time.perf_counter() - started
        out["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return out


def with_writer(db: Path, store_url: str, scratch: Path) -> dict[str, Any]:
    stop = scratch / "stop-writer"
    stop.write_text("")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    writer.stdout.readline()
    time.sleep(0.5)  # the database has changed since the last snapshot
    taken = one_snapshot(db, store_url)
    stop.write_text("stop")
    out, _ = writer.communicate(timeout=60)
    return {**taken, "writer": json.loads(out.strip().splitlines()[-1])}


def row(size_mb: int, case: str, taken: dict[str, Any]) -> dict[str, Any]:
    facts, writer = taken["facts"], taken.get("writer", {})
    return {
        "size_mb": size_mb,
        "case": case,
        "wall_s": round(taken["wall_s"], 2),
        "cpu_s": round(taken["cpu_s"], 2),
        "stored_mb": 0.0 if facts["unchanged"] else round(facts["compressed_size"] / 2**20, 1),
        "writer_longest_wait_s": round(writer["longest_wait_s"], 3) if writer else None,
        "writer_failed_writes": writer.get("errors"),
    }


def sigterm_latency(scratch: Path, runs: int = 5) -> list[float]:
    """Seconds from SIGTERM to a running `gate --supervise` until the relayer's handler ran."""
    relayer = scratch / "relayer"
    relayer.write_text(f"#!{sys.executable}\nfrom tests.support.writer import main\nmain()\n")
    relayer.chmod(0o755)
    found = []
    for i in range(runs):
        db, record = scratch / f"latency-{i}" / "relayer.db", scratch / f"latency-{i}.jsonl"
        db.parent.mkdir()
        build_legacy_001(db, commands=10)
        env = base_env(
            DATABASE_PATH=str(db),
            SNAPSHOT_STORE=f"file:{scratch / 'latency-store'}",
            WRITER_RECORD=str(record),
        )
        proc = subprocess.Popen(
            cli_argv("gate", "--supervise", "--", str(relayer)),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not records(record, "started"):
            time.sleep(0.01)
        time.sleep(0.5)  # the supervisor's periodic thread is up
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        found.append(records(record, "signal")[0]["time"] - sent)
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", default="100,1024")
    parser.add_argument("--store", help="store URL (default: a directory in the scratch folder)")
    args = parser.parse_args()
    log.configure(fmt="json", level="warning", command="bench")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-periodic-") as tmp:
        scratch = Path(tmp)
        for size in (int(s) for s in args.sizes_mb.split(",")):
            db = scratch / f"db-{size}" / "relayer.db"
            db.parent.mkdir()
            build(db, size)
            store_url = args.store or f"file:{scratch / f'store-{size}'}"
            one_snapshot(db, store_url)  # the newest snapshot to compare with
            rows.append(row(size, "changed", with_writer(db, store_url, scratch)))
            one_snapshot(db, store_url)  # the writer's last rows
            rows.append(row(size, "unchanged", one_snapshot(db, store_url)))
            for leftover in db.parent.iterdir():
                leftover.unlink()
        latency = sigterm_latency(scratch)
    header = [
        "size_mb",
        "case",
        "wall_s",
        "cpu_s",
        "stored_mb",
        "writer_longest_wait_s",
        "writer_failed_writes",
    ]
    cells = [header, *[["-" if r[h] is None else str(r[h]) for h in header] for r in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    median, longest = statistics.median(latency) * 1000, max(latency) * 1000
    print(
        f"SIGTERM to the relayer's handler (gate --supervise): median {median:.1f} ms, max {longest:.1f} ms"
    )
    print(json.dumps({"rows": rows, "sigterm_to_relayer_s": latency}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
