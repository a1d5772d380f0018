"""Reading, splitting and linting large migration files takes linear time.

    .venv/bin/python benchmarks/bench_migration_lint.py [--sizes-mb 4,32]

Two shapes of file: many small statements (a data migration), and one CREATE TRIGGER whose body
holds as many statements (the shape that made the old splitter quadratic). Baseline, measured in
the same run: the time per MiB at the smallest size. Target (checked here, never in the tests):
the time per MiB at the largest size is at most 1.5x the baseline, for both shapes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from job.deadline import Deadline  # noqa: E402
from job.migrations import discover  # noqa: E402

TARGET = 1.5
ROW = "INSERT INTO commands (id, input) VALUES ('{n:08d}', 'text; with a semicolon -- and a dash');\n"


def statements(size: int) -> str:
    return "".join(ROW.format(n=n) for n in range(size // len(ROW.format(n=0))))


def trigger(size: int) -> str:
    body = "  INSERT INTO log (x) VALUES ('BEGIN; END;');\n"
    return f"CREATE TRIGGER t AFTER INSERT ON commands BEGIN\n{body * (size // len(body))}END;\n"


def seconds(make: Callable[[int], str], size_mb: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "001_big.sql").write_text(make(size_mb * 1024 * 1024))
        started = time.monotonic()
        discover(Path(scratch), Deadline(3600))
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="4,32")
    sizes = [int(s) for s in parser.parse_args().sizes_mb.split(",")]
    ok = True
    for make in (statements, trigger):
        per_mb = [seconds(make, size) / size for size in sizes]
        ratio = per_mb[-1] / per_mb[0]
        ok = ok and ratio <= TARGET
        runs = ", ".join(f"{size} MiB {t * size:.2f} s" for size, t in zip(sizes, per_mb, strict=True))
        print(f"{make.__name__}: {runs}; time per MiB at {sizes[-1]} MiB = {ratio:.2f}x at {sizes[0]} MiB")
    print("target met" if ok else f"target missed: more than {TARGET}x")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
