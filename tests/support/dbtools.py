"""Helpers for snapshot tests: databases with an invariant, writers, decompressing snapshots."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import zstandard

ACCOUNTS = 50
TOTAL = ACCOUNTS * 1000


def make_bank(db: Path, *, wal: bool = False, padding_rows: int = 2000) -> None:
    """A database whose accounts always sum to TOTAL: a writer moving money keeps that true,
    so any torn copy shows up as a wrong sum."""
    conn = sqlite3.connect(db, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.execute("CREATE TABLE padding (id INTEGER PRIMARY KEY, blob BLOB)")
    conn.execute("CREATE INDEX padding_blob ON padding (blob)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO accounts VALUES (?, 1000)", [(i,) for i in range(ACCOUNTS)])
    conn.execute(
        "INSERT INTO padding (blob) SELECT randomblob(900) FROM (WITH RECURSIVE c(x) AS "
        f"(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {padding_rows}) SELECT x FROM c)"
    )
    conn.execute("COMMIT")
    conn.close()


def scalar(db: Path, sql: str) -> object:
    """The single value a query returns, on a connection opened and closed for it."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def bank_total(db: Path) -> int:
    return int(str(scalar(db, "SELECT sum(balance) FROM accounts")))


WRITER = """
import os, random, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
stop = time.monotonic() + float(sys.argv[2])  # at the latest; or once the file argv[3] exists
n = 0
print("writing", flush=True)
while time.monotonic() < stop and not (len(sys.argv) > 3 and os.path.exists(sys.argv[3])):
    a, b = random.sample(range(50), 2)
    amount = random.randint(1, 50)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
        conn.execute("INSERT INTO padding (blob) VALUES (randomblob(500))")
        conn.execute("COMMIT")
        n += 1
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
print(n, flush=True)
"""

KILLED_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 5")  # spill dirty pages into the database file mid-transaction
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE accounts SET balance = balance + 1")
conn.execute("UPDATE padding SET blob = randomblob(900)")
print("dirty", flush=True)
time.sleep(600)
"""


def decompress(packed: Path, out: Path) -> str:
    """Decompress a snapshot's data object; the SHA-256 of the database bytes."""
    digest = hashlib.sha256()
    with packed.open("rb") as src, out.open("wb") as dst:
        reader = zstandard.ZstdDecompressor().stream_reader(src)
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def integrity(db: Path) -> str:
    return str(scalar(db, "PRAGMA integrity_check"))


def incompressible_db(path: Path, megabytes: int) -> Path:
    """A database of random blobs: its snapshot is about `megabytes` MB (S3 parts of 5 MB)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs (b BLOB)")
    conn.executemany("INSERT INTO blobs VALUES (randomblob(100000))", [()] * (megabytes * 10))
    conn.commit()
    conn.close()
    return path
