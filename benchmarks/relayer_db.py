"""A relayer-shaped database for the benchmarks: schema 004 through the job's own `migrate`, then
`commands` rows whose text compresses like real relayer data (about 2x with zstd -1): prompts and
summaries drawn from a Zipf vocabulary, outputs mixing such prose with base64 of random bytes (the
shape of command logs, hashes and tokens). Neither zeros nor pure random, which would flatter or
punish the compressor.

    .venv/bin/python -m benchmarks.relayer_db PATH SIZE_MIB
"""

from __future__ import annotations

import base64
import random
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TS = "2026-01-15T10:00:00Z"
POOL = 20_000  # distinct sentences: repeats land far beyond zstd -1's window


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(3000)
    ]
    return words, [1 / (rank + 1) for rank in range(len(words))]


def build(db: Path, size_mib: int, seed: int = 7) -> None:
    """Create `db` (replacing it) and fill it to at least `size_mib` MiB."""
    db.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "job", "migrate", "--db", str(db), "--log-level", "error"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rng = random.Random(seed)
    words, weights = _vocabulary(rng)
    long = [" ".join(rng.choices(words, weights, k=60)) for _ in range(POOL)]
    short = [" ".join(rng.choices(words, weights, k=9)) for _ in range(POOL)]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO admin (id, username, password_hash, totp_secret, created_at, updated_at) "
        "VALUES ('a', 'ops', 'h', 't', ?, ?)",
        (TS, TS),
    )
    conn.execute(
        "INSERT INTO devices (id, admin_id, device_id, name, role, token_hash, registered_at, last_seen_at) "
        "VALUES ('d', 'a', 'exec-1', 'laptop', 'executor', 'th', ?, ?)",
        (TS, TS),
    )
    n = 0
    while db.stat().st_size < size_mib << 20:
        rows = []
        for _ in range(5000):
            n += 1
            output = (
                long[rng.randrange(POOL)]
                + "\n"
                + base64.b64encode(rng.randbytes(rng.randint(260, 440))).decode()
            )
            rows.append(
                (
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    f"run task {n}: {short[rng.randrange(POOL)]}",
                    output,
                    short[rng.randrange(POOL)],
                    f"/srv/repo{n % 97}",
                )
            )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO commands (id, device_id, input, status, output, summary, repo_path, context_mode, "
            "created_at, updated_at, translator_model, workload_model) "
            f"VALUES (?, 'd', ?, 'done', ?, ?, ?, 'full', '{TS}', '{TS}', 'small', 'large')",
            rows,
        )
        conn.execute("COMMIT")
    conn.close()


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]))
