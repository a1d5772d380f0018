"""A model of the relayer's own start-up migration runner, written from facts/relayer.md (not from
any code), used to build databases exactly the way production's was built.

At every start the relayer opens the database (busy timeout 5000 ms, foreign_keys ON), creates
`_schema_migrations(name TEXT PRIMARY KEY)` if needed, then for every entry of MIGRATIONS_DIR whose
extension is exactly `sql`, in byte order of the names: skips it when `SELECT 1 ... WHERE name = ?`
finds a row (an error of that query counts as "not applied"), else runs the whole file as a batch in
autocommit (each statement its own transaction, stopping at the first error with the earlier ones
committed) and then inserts the name. Any error aborts the start.

`die_after=N` makes the runner kill itself with SIGKILL after N statements of this start (in a
subprocess: `python -m tests.support.relayer_model DB DIR --die-after N`), the way a crash leaves a
half-applied file or a whole file without its ledger row.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELAYER_MIGRATIONS = REPO / "tests" / "fixtures" / "relayer-migrations"
MODEL = [sys.executable, "-m", "tests.support.relayer_model"]


class StartAborted(Exception):
    """The relayer's start failed (it would crash-loop on this database)."""


def statements(sql: str) -> list[str]:
    """Split a batch where SQLite itself says a statement is complete."""
    out: list[str] = []
    current = ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current)
            current = ""
    if current.strip():
        out.append(current)  # a last statement without ";" still runs in a batch
    return out


def candidates(migrations_dir: Path) -> list[Path]:
    if not migrations_dir.is_dir():
        return []
    return sorted(
        (p for p in migrations_dir.iterdir() if p.name.rsplit(".", 1)[-1:] == ["sql"] and "." in p.name),
        key=lambda p: os.fsencode(p.name),
    )


def start(
    db_path: Path, migrations_dir: Path = RELAYER_MIGRATIONS, *, die_after: int | None = None
) -> list[str]:
    """One relayer start: the names it applied. StartAborted when the relayer would fail to start."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA foreign_keys = ON")
    executed = 0
    applied: list[str] = []
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS _schema_migrations (name TEXT PRIMARY KEY)")
        for path in candidates(migrations_dir):
            try:
                found = conn.execute(
                    "SELECT 1 FROM _schema_migrations WHERE name = ?", (path.name,)
                ).fetchone()
            except sqlite3.Error:
                found = None
            if found:
                continue
            for sql in statements(path.read_text()):
                if die_after is not None and executed >= die_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    conn.execute(sql)
                except sqlite3.Error as exc:
                    raise StartAborted(f"{path.name}: {exc}") from exc
                executed += 1
            if die_after is not None and executed >= die_after:
                os.kill(os.getpid(), signal.SIGKILL)  # after the batch, before recording it
            conn.execute("INSERT INTO _schema_migrations (name) VALUES (?)", (path.name,))
            applied.append(path.name)
    finally:
        conn.close()
    return applied


def start_and_die(db_path: Path, migrations_dir: Path, die_after: int) -> int:
    """Run one start in a subprocess that SIGKILLs itself after `die_after` statements."""
    proc = subprocess.run(
        [*MODEL, str(db_path), str(migrations_dir), "--die-after", str(die_after)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("migrations")
    parser.add_argument("--die-after", type=int)
    args = parser.parse_args()
    print(start(Path(args.db), Path(args.migrations), die_after=args.die_after))
