"""Snapshot speed and memory, as ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_snapshot.py [--sizes-mb 64,256]

Baseline, measured in the same run on the same file: the naive snapshot a script would do
(one-step `Connection.backup` to a file, `zstd.compress(whole file)` in memory, SHA-256, write).
Targets (checked here, never in the tests):
- speed: our whole `snapshot` (pinned-transaction copy in steps + quick_check + one streaming
  zstd/SHA-256 pass + verified local store write) takes at most 1.5x the naive baseline;
- memory: our peak RSS does not grow with the database (largest within 1.25x of smallest), and at
  the largest size is under half the naive baseline's, which holds the whole file in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def build(db: Path, size_mb: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE commands (id INTEGER PRIMARY KEY, input TEXT, output BLOB)")
    rows = size_mb * 1024 * 1024 // 1100
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO commands (input, output) SELECT printf('run task %d with some text', x), "
        "zeroblob(600) || randomblob(400) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        f"SELECT x + 1 FROM c WHERE x < {rows}) SELECT x FROM c)"
    )
    conn.execute("COMMIT")
    conn.close()


NAIVE = """
import hashlib, json, resource, sqlite3, sys, time, zstandard
started = time.perf_counter()
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2] + ".db")
src.backup(dst)
dst.close()
data = open(sys.argv[2] + ".db", "rb").read()
packed = zstandard.ZstdCompressor(level=1).compress(data)
hashlib.sha256(data).hexdigest(), hashlib.sha256(packed).hexdigest()
open(sys.argv[2] + ".zst", "wb").write(packed)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


CHILD = """
import json, resource, sys, time
from pathlib import Path
from typing import Any
from job import log
from job.deadline import Deadline
from job.snapshot import create
from job.store.file import FileStore
log.configure(fmt="json", level="warning", command="bench")
started = time.perf_counter()
deadline = Deadline(3600)
facts = create(Path(sys.argv[1]), FileStore(sys.argv[2], deadline), reason="bench", deadline=deadline)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ratio": facts["ratio"],
                  "phases": {k: facts[k] for k in ("copy_s", "check_s", "compress_s", "upload_s")}}))
"""


def child(code: str, *args: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", default="64,256")
    sizes = [int(s) for s in parser.parse_args().sizes_mb.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            db = Path(scratch) / f"bench-{size}.db"
            build(db, size)
            naive = child(NAIVE, db, Path(scratch) / f"naive-{size}")
            run = child(CHILD, db, Path(scratch) / f"store-{size}")
            results.append(
                {
                    "size_mb": round(db.stat().st_size / 2**20),
                    "naive_s": round(naive["seconds"], 3),
                    "snapshot_s": round(run["seconds"], 3),
                    "speed_ratio": round(run["seconds"] / naive["seconds"], 2),
                    "naive_peak_rss_mb": round(naive["peak_rss_mb"], 1),
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "memory_ratio_vs_naive": round(run["peak_rss_mb"] / naive["peak_rss_mb"], 2),
                    "compression_ratio": run["ratio"],
                    "phases_s": run["phases"],
                }
            )
    memory_ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    for row in results:
        print(json.dumps(row))
    verdict = {
        "speed_ok": all(r["speed_ratio"] <= 1.5 for r in results),
        "memory_ratio_largest_vs_smallest": round(memory_ratio, 2),
        "memory_ok": memory_ratio <= 1.25 and results[-1]["memory_ratio_vs_naive"] < 0.5,
        "self_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(verdict))
    return 0 if verdict["speed_ok"] and verdict["memory_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
