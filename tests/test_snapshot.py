"""Snapshots with the local store: consistency under writers and crashes, manifest, dedupe, verify."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job import database
from job.deadline import Deadline
from job.errors import DatabaseInUse
from tests.conftest import base_env
from tests.support.dbtools import (
    KILLED_WRITER,
    TOTAL,
    WRITER,
    bank_total,
    decompress,
    integrity,
    make_bank,
)
from tests.support.legacy import build_legacy_001


def snap(cli, db: Path, store: Path, *args: str, env: dict[str, str] | None = None):
    return cli("snapshot", "--db", str(db), "--store", f"file:{store}", *args, env=env)


def snapshot_versions(db: Path, count: int, take, pause: float = 0.0) -> list[str]:
    """Change the database `count` times, taking a snapshot (`take()` -> id) after each change."""
    ids = []
    for i in range(count):
        conn = sqlite3.connect(db)
        conn.execute("UPDATE commands SET summary = ?", (f"v{i}",))
        conn.commit()
        conn.close()
        ids.append(take())
        time.sleep(pause)
    return ids


def only_snapshot(store: Path) -> tuple[dict[str, object], Path]:
    [folder] = sorted((store / "snapshots").iterdir())
    return json.loads((folder / "manifest.json").read_text()), folder / "relayer.db.zst"


def test_snapshot_round_trip_and_manifest(cli, tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=500)
    env = base_env(
        RENDER_GIT_COMMIT="abc123", RENDER_SERVICE_NAME="relayer", RENDER_API_KEY="rnd_secretsecretsecret1"
    )
    run = snap(cli, db, tmp_path / "store", "--reason", "manual", env=env)
    assert run.rc == 0, run.stdout
    manifest, data = only_snapshot(tmp_path / "store")
    assert manifest["format"] == "relayer-job.snapshot/1"
    assert manifest["id"] == run.finished["snapshot_id"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", str(manifest["id"]))
    assert manifest["reason"] == "manual" and manifest["quick_check"] == "ok"
    assert manifest["schema_version"] == 1 and manifest["journal_mode"] == "delete"
    assert manifest["migrations"] == [{"name": "001_initial.sql", "checksum": None}]
    assert manifest["deploy"] == {"RENDER_GIT_COMMIT": "abc123", "RENDER_SERVICE_NAME": "relayer"}
    assert "rnd_secret" not in json.dumps(manifest) + run.stdout
    assert manifest["compressed_size"] == data.stat().st_size
    restored = tmp_path / "restored.db"
    assert decompress(data, restored) == manifest["raw_sha256"]
    assert manifest["raw_size"] == restored.stat().st_size
    assert integrity(restored) == "ok"
    conn = sqlite3.connect(restored)
    assert conn.execute("SELECT count(*) FROM commands").fetchone() == (500,)
    conn.close()
    for phase in ("copy_s", "compress_s", "upload_s"):  # quick_check runs during compress_s
        assert run.finished[phase] >= 0
    assert manifest["foreign_key_check"] == "ok"
    assert set(manifest["source"]) == {
        "change_counter",
        "page_count",
        "size",
        "inode",
        "ctime_ns",
        "mtime_ns",
    }


def test_unchanged_database_is_not_uploaded_again(cli, tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=20)
    first = snap(cli, db, tmp_path / "store")
    second = snap(cli, db, tmp_path / "store")
    assert second.rc == 0 and second.finished["unchanged"] is True
    assert second.event("snapshot.unchanged")["id"] == first.finished["snapshot_id"]
    assert len(list((tmp_path / "store" / "snapshots").iterdir())) == 1
    conn = sqlite3.connect(db)
    conn.execute("UPDATE commands SET status = 'done'")
    conn.commit()
    conn.close()
    third = snap(cli, db, tmp_path / "store")
    assert third.finished["unchanged"] is False
    assert len(list((tmp_path / "store" / "snapshots").iterdir())) == 2


def test_missing_database(cli, tmp_path: Path) -> None:
    run = snap(cli, tmp_path / "nope.db", tmp_path / "store")
    assert run.rc == 5 and "does not exist" in run.error and "--if-db-exists" in run.error
    allowed = snap(cli, tmp_path / "nope.db", tmp_path / "store", "--if-db-exists")
    assert allowed.rc == 0 and allowed.finished["skipped"] == "no database"
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_snapshot_while_a_writer_commits_continuously(cli, tmp_path: Path, wal: bool) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, wal=wal, padding_rows=20000)
    stop = tmp_path / "stop-writing"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), "120", str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    run = snap(cli, db, tmp_path / "store")
    committed_during = writer.poll() is None
    stop.touch()
    out, _ = writer.communicate(timeout=60)
    assert run.rc == 0, run.stdout
    assert committed_during and int(out.strip()) > 0
    assert run.event("snapshot.yielding")  # the writer has it open: the gentle copy (copied, then patched)
    manifest, data = only_snapshot(tmp_path / "store")
    restored = tmp_path / "restored.db"
    assert decompress(data, restored) == manifest["raw_sha256"]
    assert integrity(restored) == "ok"
    assert bank_total(restored) == TOTAL
    assert manifest["journal_mode"] == ("wal" if wal else "delete")
    conn = sqlite3.connect(restored)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # self-contained file
    conn.close()


def _bytes_written_by_this_process() -> int:
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["wchar"])


@pytest.mark.parametrize("grown", [False, True], ids=["same-size", "grown"])
def test_the_gentle_copy_rewrites_only_what_changed_since_its_unlocked_pass(
    tmp_path: Path, grown: bool
) -> None:
    """Beside another process the file is copied without the lock, then compared with the database
    under the lock and patched where it changed: the result is the database byte for byte, and the
    unchanged parts are not written again."""
    db = tmp_path / "relayer.db"
    make_bank(db, padding_rows=8000)  # several PATCH_CHUNKs
    earlier = tmp_path / "copy.db"
    shutil.copyfile(db, earlier)  # what the unlocked pass copied
    conn = sqlite3.connect(db, isolation_level=None)  # a commit between that pass and the lock
    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
    if grown:
        conn.execute("INSERT INTO padding (blob) SELECT randomblob(900) FROM padding LIMIT 2000")
    conn.close()
    size = db.stat().st_size
    before = _bytes_written_by_this_process()
    with db.open("rb") as source, earlier.open("r+b") as target:
        assert database._patch_range(source.fileno(), target.fileno(), 0, size) == size
        written = _bytes_written_by_this_process() - before
        target.truncate(size)
    assert earlier.read_bytes() == db.read_bytes()
    if not grown:  # page 1 (the change counter) and the accounts' page: at most two chunks
        assert 0 < written <= 2 * database.PATCH_CHUNK < size / 3


class _ActsMidCopy(Deadline):
    """A deadline whose second check (mid-way through the unlocked pass) runs `act` once."""

    def __init__(self, act) -> None:
        super().__init__(60)
        self.act, self.checks = act, 0

    def check(self, doing: str) -> None:
        self.checks += 1
        if self.checks == 2:
            self.act()
        super().check(doing)


def _spilled_transaction(db: Path) -> sqlite3.Connection:
    """A writer whose open transaction has grown the file (pages spilled into it, uncommitted)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA cache_size = 10")
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 9000) "
        "INSERT INTO padding (blob) SELECT randomblob(4000) FROM n"
    )
    return conn


def test_the_gentle_copy_survives_a_database_shrinking_under_its_unlocked_pass(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, padding_rows=2000)
    before = db.read_bytes()
    writer = _spilled_transaction(db)
    assert db.stat().st_size > len(before) + 2 * database.RAW_COPY_CHUNK
    copy = tmp_path / "copy.db"
    copy.touch()
    rolled_back = _ActsMidCopy(lambda: writer.execute("ROLLBACK"))  # the file shrinks back
    copied = database.raw_copy(db, copy, deadline=rolled_back, gentle=True)
    writer.close()
    assert copied is not None and rolled_back.checks > 2
    assert copy.read_bytes() == db.read_bytes() == before
    assert bank_total(copy) == TOTAL


def test_the_gentle_copy_refuses_a_database_replaced_under_its_unlocked_pass(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, padding_rows=2000)
    writer = _spilled_transaction(db)  # only to make the file several chunks long
    writer.execute("COMMIT")
    writer.close()
    other = tmp_path / "other.db"
    make_bank(other, padding_rows=10)
    copy = tmp_path / "copy.db"
    copy.touch()
    with pytest.raises(DatabaseInUse, match="was replaced by another file while it was being copied"):
        database.raw_copy(db, copy, deadline=_ActsMidCopy(lambda: other.rename(db)), gentle=True)


def test_wal_content_not_yet_checkpointed_is_in_the_snapshot(cli, tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, wal=True, padding_rows=10)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute("INSERT INTO padding (blob) VALUES (x'c0ffee')")
    assert Path(f"{db}-wal").stat().st_size > 0
    run = snap(cli, db, tmp_path / "store")
    holder.close()
    assert run.rc == 0, run.stdout
    _, data = only_snapshot(tmp_path / "store")
    restored = tmp_path / "restored.db"
    decompress(data, restored)
    conn = sqlite3.connect(restored)
    assert conn.execute("SELECT count(*) FROM padding WHERE blob = x'c0ffee'").fetchone() == (1,)
    conn.close()


def test_hot_journal_left_by_a_killed_writer_is_rolled_back(cli, tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, padding_rows=3000)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "dirty"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    journal = Path(f"{db}-journal")
    assert journal.exists() and journal.stat().st_size > 0
    run = snap(cli, db, tmp_path / "store")
    assert run.rc == 0, run.stdout
    _, data = only_snapshot(tmp_path / "store")
    restored = tmp_path / "restored.db"
    decompress(data, restored)
    assert integrity(restored) == "ok"
    assert bank_total(restored) == TOTAL  # the killed +1 per account was rolled back


def corrupt(db: Path) -> None:
    """Overwrite a page in the middle of the padding table's b-tree."""
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek((size // 4096 // 2) * 4096)
        f.write(b"\xff" * 4096)


def test_corrupt_database_is_refused_and_nothing_uploaded(cli, tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    make_bank(db, padding_rows=3000)
    corrupt(db)
    run = snap(cli, db, tmp_path / "store")
    assert run.rc == 5 and "quick_check" in run.error and "nothing was uploaded" in run.error
    assert not (tmp_path / "store" / "snapshots").exists() or not any(
        (tmp_path / "store" / "snapshots").iterdir()
    )
    assert not list(tmp_path.glob(".relayer-job-snapshot-*"))  # scratch files cleaned up


def test_list_verify_and_detect_a_damaged_snapshot(cli, tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=50)
    first = snap(cli, db, store, "--reason", "first").finished["snapshot_id"]
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM commands WHERE rowid % 2 = 0")
    conn.commit()
    conn.close()
    second = snap(cli, db, store, "--reason", "second").finished["snapshot_id"]
    listing = cli("snapshots", "list", "--json", "--store", f"file:{store}")
    rows = json.loads(listing.stdout)
    assert [r["id"] for r in rows] == [second, first]
    assert rows[0]["reason"] == "second" and rows[0]["schema_version"] == 1
    ok = cli("snapshots", "verify", "--download", "--store", f"file:{store}")
    assert ok.rc == 0 and ok.finished["id"] == second and ok.finished["integrity_check"] == "ok"

    data = store / "snapshots" / first / "relayer.db.zst"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    quick = cli("snapshots", "verify", first, "--store", f"file:{store}")
    assert quick.rc == 0  # same size: only the download drill can tell
    bad = cli("snapshots", "verify", first, "--download", "--store", f"file:{store}")
    assert bad.rc == 8 and "compressed SHA-256" in bad.error

    data.write_bytes(bytes(blob[:100]))
    truncated = cli("snapshots", "verify", first, "--store", f"file:{store}")
    assert truncated.rc == 8 and "manifest says" in truncated.error

    (store / "snapshots" / second / "manifest.json").write_text('{"format": "something/9"}')
    unreadable = cli("snapshots", "verify", "latest", "--store", f"file:{store}")
    assert unreadable.rc == 8 and "something/9" in unreadable.error
    missing = cli("snapshots", "verify", "20200101T000000Z-00000000", "--store", f"file:{store}")
    assert missing.rc == 2 and "not found" in missing.error


def test_uncommitted_snapshot_is_invisible_and_pruned_after_an_hour(cli, tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=10)
    ids = snapshot_versions(db, 3, lambda: snap(cli, db, store).finished["snapshot_id"], pause=1.01)
    orphan = store / "snapshots" / "20200101T000000Z-deadbeef"
    orphan.mkdir()
    (orphan / "relayer.db.zst").write_bytes(b"half")
    old = time.time() - 7200
    os.utime(orphan / "relayer.db.zst", (old, old))
    listing = json.loads(cli("snapshots", "list", "--json", "--store", f"file:{store}").stdout)
    assert [r["id"] for r in listing] == ids[::-1]

    dry = cli("snapshots", "prune", "--keep-last", "1", "--store", f"file:{store}")
    assert dry.rc == 0 and dry.finished["delete"] == ids[1::-1] and dry.finished["applied"] is False
    assert dry.finished["leftovers"] == ["20200101T000000Z-deadbeef"]
    assert len(list((store / "snapshots").iterdir())) == 4
    applied = cli("snapshots", "prune", "--keep-last", "1", "--apply", "--store", f"file:{store}")
    assert applied.rc == 0
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == [ids[2]]
    zero = cli("snapshots", "prune", "--keep-last", "0", "--store", f"file:{store}")
    assert zero.rc == 2 and "at least 1" in zero.error


def test_ids_sort_in_the_order_taken_even_within_one_second() -> None:
    from job.snapshot import new_id

    taken = time.gmtime(1_700_000_000)
    first = new_id(taken, "f" * 64, after=None)
    second = new_id(taken, "0" * 64, after=first)
    assert first == "20231114T221320Z-ffffffff"
    assert second == "20231114T221321Z-00000000" and second > first


def test_a_damaged_newest_manifest_does_not_block_the_next_snapshot(cli, tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=10)
    first = snap(cli, db, store).finished["snapshot_id"]
    (store / "snapshots" / first / "manifest.json").write_text("{not json")
    second = snap(cli, db, store)
    assert second.rc == 0 and second.finished["unchanged"] is False
    assert second.event("snapshot.damaged")["id"] == first
    assert second.finished["snapshot_id"] > first
    damaged = cli("snapshots", "verify", first, "--store", f"file:{store}")
    assert damaged.rc == 8 and "not valid JSON" in damaged.error
    listing = cli("snapshots", "list", "--json", "--store", f"file:{store}")
    assert listing.rc == 0 and [r["id"] for r in json.loads(listing.stdout)] == [
        second.finished["snapshot_id"]
    ]
    assert listing.event("snapshot.damaged")["id"] == first


def test_unchanged_is_only_trusted_when_the_object_is_there(cli, tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=10)
    first = snap(cli, db, store).finished["snapshot_id"]
    (store / "snapshots" / first / "relayer.db.zst").write_bytes(b"truncated")
    again = snap(cli, db, store)
    assert again.rc == 0 and again.finished["unchanged"] is False
    assert again.event("snapshot.damaged")["id"] == first
    forced = snap(cli, db, store, "--force")
    assert forced.rc == 0 and forced.finished["unchanged"] is False
    assert forced.finished["snapshot_id"] > again.finished["snapshot_id"]


def test_too_little_free_space_is_refused_before_copying(cli, tmp_path: Path) -> None:
    import subprocess as sp

    point = tmp_path / "small-disk"
    point.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        db = point / "relayer.db"
        build_legacy_001(db, commands=1500)
        run = snap(cli, db, tmp_path / "store")
        assert run.rc == 4 and "not enough free space" in run.error and str(point) in run.error
        assert "relayer.db.replaced-*" in run.error  # what to free
        assert not list(point.glob(".relayer-job-snapshot-*"))
        status = cli("status", "--json", "--db", str(db), "--store", f"file:{tmp_path / 'store'}")
        assert status.rc == 4, status.stdout  # status says so before a deploy finds out
        report = json.loads(status.stdout)
        assert any("not enough free space" in p["error"] for p in report["problems"])
    finally:
        sp.run(["umount", str(point)], check=False)


def test_prune_keep_days_keeps_recent_ways_back(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from job import catalog, retention
    from job.config import S3Options
    from job.deadline import Deadline
    from job.store import open_store
    from tests.conftest import run_cli

    db, store_dir = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=10)
    ids = snapshot_versions(
        db, 3, lambda: snap(run_cli, db, store_dir, "--reason", "pre-migrate").finished["snapshot_id"]
    )
    store = open_store(f"file:{store_dir}", S3Options(), Deadline(60))
    policy = retention.Policy(keep_last=1, keep_days=2)
    soon = catalog.prune(store, policy=policy, apply=False, now=datetime.now(UTC) + timedelta(days=1))
    assert soon["delete"] == [] and soon["keep"] == ids[::-1]
    later = catalog.prune(store, policy=policy, apply=False, now=datetime.now(UTC) + timedelta(days=3))
    assert later["keep"] == [ids[2]] and later["delete"] == ids[1::-1]


def test_scratch_copies_are_judged_by_their_lock_not_their_pid(cli, tmp_path: Path) -> None:
    """In a container every start has the same pid: a copy left by a killed run must go whatever pid
    its name carries (here: one alive, pid 1), while one another live run holds must stay."""
    import subprocess as sp
    import sys

    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=50)
    left = tmp_path / ".relayer-job-snapshot-1-killed.db"
    left.write_bytes(b"x" * 4096)
    held = tmp_path / ".relayer-job-snapshot-1-running.db"
    held.write_bytes(b"y" * 4096)
    holder = sp.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)",
            str(held),
        ],
        stdout=sp.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        run = snap(cli, db, tmp_path / "store")
        assert run.rc == 0, run.stdout
        assert not left.exists() and held.exists()
        assert run.event("snapshot.scratch_removed")["path"] == str(left)
    finally:
        holder.kill()
        holder.wait()


def test_a_way_back_is_never_an_equal_snapshot_retention_may_prune_sooner(cli, tmp_path: Path) -> None:
    """A deploy that will migrate takes a pre-migrate snapshot of its own even when an equal
    periodic one exists (SNAPSHOT_RETENTION keeps ways back for days, periodic ones maybe for an
    hour); an equal pre-migrate one, from a retried deploy, is reused."""
    from job import snapshot
    from job.config import S3Options
    from job.deadline import Deadline
    from job.store import open_store

    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=20)
    store = open_store(f"file:{tmp_path / 'store'}", S3Options(), Deadline(60))
    periodic = snapshot.create(db, store, reason="periodic", deadline=Deadline(60))
    assert periodic["unchanged"] is False
    again = snapshot.create(db, store, reason="periodic", deadline=Deadline(60))
    assert again["unchanged"] is True and again["snapshot_id"] == periodic["snapshot_id"]
    way_back = snapshot.create(db, store, reason="pre-migrate", deadline=Deadline(60), way_back=True)
    assert way_back["unchanged"] is False and way_back["snapshot_id"] != periodic["snapshot_id"]
    retried = snapshot.create(db, store, reason="pre-migrate", deadline=Deadline(60), way_back=True)
    assert retried["unchanged"] is True and retried["snapshot_id"] == way_back["snapshot_id"]
    os.utime(db)  # a changed file state with the same content: proven equal by its hash instead
    by_content = snapshot.create(db, store, reason="pre-restore", deadline=Deadline(60), way_back=True)
    assert by_content["unchanged"] is True and by_content["snapshot_id"] == way_back["snapshot_id"]

    other = tmp_path / "other"
    taken = snap(cli, db, other, "--reason", "periodic")
    assert taken.rc == 0, taken.stdout
    deployed = cli("deploy", "--db", str(db), "--store", f"file:{other}")  # 002 is pending: it writes
    assert deployed.rc == 0, deployed.stdout
    pre_migrate = deployed.finished["snapshot_id"]
    assert pre_migrate != taken.finished["snapshot_id"]
    assert (
        json.loads((other / "snapshots" / pre_migrate / "manifest.json").read_text())["reason"]
        == "pre-migrate"
    )
