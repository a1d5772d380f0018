"""Restores that crash, repeat, meet a bad snapshot, a writer, or a full disk of kept copies; the
empty-database rule; point-in-time restore. Real SQLite, real SIGKILLs, real subprocesses."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Run, base_env, run_cli
from tests.support.legacy import REPO, build_legacy_001

SIDECARS = ("-journal", "-wal", "-shm")
ROWS = 40


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


def count(db: Path, table: str = "commands") -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kept(db: Path) -> list[Path]:
    """The replaced databases kept beside `db` (their journal files aside)."""
    return sorted(p for p in db.parent.glob(f"{db.name}.replaced-*") if not p.name.endswith(SIDECARS))


def scratch(db: Path) -> list[Path]:
    return sorted(db.parent.glob(".relayer-job-restore-*"))


@dataclass
class Site:
    """A database on its disk and its store, with a snapshot of the good data (`good`)."""

    db: Path
    store: Path
    good: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(DATABASE_PATH=str(self.db), SNAPSHOT_STORE=f"file:{self.store}", **extra)

    def run(self, *args: str, **extra: str) -> Run:
        return run_cli(*args, env=self.env(**extra))

    def listing(self) -> list[dict[str, object]]:
        listed = self.run("snapshots", "list", "--json")
        assert listed.rc == 0, listed.stderr
        return list(json.loads(listed.stdout))

    def record(self, name: str = ".relayer-job-restored") -> dict[str, str]:
        return dict(json.loads((self.db.parent / name).read_text()))


def incident(tmp_path: Path) -> Site:
    """The good data snapshotted, then an incident: every command row deleted."""
    site = Site(tmp_path / "data" / "relayer.db", tmp_path / "store")
    site.db.parent.mkdir()
    build_legacy_001(site.db, commands=ROWS)
    taken = site.run("snapshot", "--reason", "manual")
    assert taken.rc == 0, taken.stdout
    site.good = taken.finished["snapshot_id"]
    execute(site.db, "DELETE FROM commands")
    return site


def killed(point: tuple[str, str, str], *args: str, env: dict[str, str]) -> None:
    """Run the CLI and SIGKILL it at `point` (see tests/support/killpoint.py)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.killpoint", *point, "--", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


KILL_POINTS = {
    "after-resolving": ("job.restore._resolve_once", "after", "-"),
    "after-the-pre-restore-snapshot": ("job.snapshot.create", "after", "reason=pre-restore"),
    "before-the-swap": ("job.restore._swap", "before", "-"),
    "kept-aside-not-renamed": ("job.restore._keep_aside", "after", "-"),
    "after-the-swap-before-recording": ("job.restore._finish", "before", "-"),
}


# --- Item 3: a request is resolved once, recorded first, reused after a crash -------------------


@pytest.mark.parametrize("point", KILL_POINTS, ids=KILL_POINTS)
def test_start_path_restore_killed_anywhere_restores_the_snapshot_it_chose(
    tmp_path: Path, point: str
) -> None:
    site = incident(tmp_path)
    start = site.env(RESTORE_SNAPSHOT="latest")
    killed(KILL_POINTS[point], "deploy", env=start)
    # Meanwhile a newer snapshot of whatever the disk holds now: `latest` resolved again would pick it.
    assert site.run("snapshot", "--force", "--reason", "manual").rc == 0
    retry = run_cli("deploy", env=start)
    assert retry.rc == 0, retry.stdout
    retry.event("restore.resumed")
    assert retry.finished["restored"] == site.good and count(site.db) == ROWS
    assert site.record()["id"] == site.good and site.record()["state"] == "done"
    assert len(kept(site.db)) <= 1 and scratch(site.db) == []
    # One from the killed run, at most one more from the retry: the manual snapshot taken between
    # them is not a way back, so the retry does not reuse it.
    assert sum(s["reason"] == "pre-restore" for s in site.listing()) <= 2
    again = run_cli("deploy", env=start)
    assert again.rc == 0 and again.finished["restored"] is None and count(site.db) == ROWS


@pytest.mark.parametrize(
    "point",
    ["after-the-pre-restore-snapshot", "kept-aside-not-renamed", "after-the-swap-before-recording"],
)
def test_manual_restore_killed_anywhere_is_resumed_by_the_same_command(tmp_path: Path, point: str) -> None:
    site = incident(tmp_path)
    killed(KILL_POINTS[point], "restore", "latest", "--force", env=site.env())
    assert site.run("snapshot", "--force", "--reason", "manual").rc == 0
    retry = site.run("restore", "latest", "--force")
    assert retry.rc == 0, retry.stdout
    retry.event("restore.resumed")
    assert retry.finished["restored"] == site.good and count(site.db) == ROWS
    record = site.record(".relayer-job-restored-manual")
    assert record["id"] == site.good and record["state"] == "done" and record["request"] == "latest"
    assert len(kept(site.db)) <= 1


def test_restore_latest_twice_never_undoes_the_first(tmp_path: Path) -> None:
    site = incident(tmp_path)
    first = site.run("restore", "--force")
    assert first.rc == 0 and first.finished["restored"] == site.good
    assert site.listing()[0]["id"] == first.finished["pre_restore_snapshot_id"]  # the damaged data
    snapshots = len(site.listing())

    second = site.run("restore", "latest", "--force")
    assert second.rc == 0 and second.finished["restored"] == site.good, second.stdout
    assert second.event("restore.repeated")["id"] == site.good
    second.event("restore.already_in_place")
    assert count(site.db) == ROWS and len(kept(site.db)) == 1 and len(site.listing()) == snapshots

    execute(site.db, "DELETE FROM commands WHERE rowid % 2 = 0")  # written since
    third = site.run("restore", "latest", "--force")
    assert third.rc == 0 and third.finished["restored"] == site.good and count(site.db) == ROWS
    assert count(kept(site.db)[0]) == ROWS // 2  # what it replaced is kept


def test_a_restore_refused_for_want_of_force_records_no_choice(tmp_path: Path) -> None:
    """Refused (exit 2) without --force: nothing resolved, nothing recorded, so a later run with
    --force chooses afresh (a newer snapshot taken meanwhile), not the choice of the refused run."""
    site = incident(tmp_path)
    refused = site.run("restore", "latest")
    assert refused.rc == 2 and "--force" in refused.error
    assert not (site.db.parent / ".relayer-job-restored-manual").exists()
    execute(site.db, "DELETE FROM commands WHERE rowid % 3 = 0")
    newer = site.run("snapshot", "--reason", "newer").finished["snapshot_id"]
    forced = site.run("restore", "latest", "--force")
    assert forced.rc == 0 and forced.finished["restored"] == newer, forced.stdout
    assert not [e for e in forced.events if e.get("event") == "restore.resumed"]


def test_latest_is_never_a_pre_restore_snapshot(tmp_path: Path) -> None:
    site = Site(tmp_path / "data" / "relayer.db", tmp_path / "store")
    site.db.parent.mkdir()
    build_legacy_001(site.db, commands=5)
    only = site.run("snapshot", "--reason", "pre-restore").finished["snapshot_id"]
    refused = site.run("restore", "latest", "--db", str(tmp_path / "new" / "relayer.db"))
    assert refused.rc == 2 and "other than pre-restore" in refused.error and "by id" in refused.error
    by_id = site.run("restore", only, "--db", str(tmp_path / "new" / "relayer.db"))
    assert by_id.rc == 0 and by_id.finished["restored"] == only


# --- Item 4: a snapshot is proved with the deploy's health checks before the swap ---------------


def test_a_snapshot_a_deploy_would_refuse_is_never_swapped_in(tmp_path: Path) -> None:
    site = Site(tmp_path / "data" / "relayer.db", tmp_path / "store")
    site.db.parent.mkdir()
    build_legacy_001(site.db, commands=20)
    execute(  # a repo of an admin that does not exist, written with foreign keys off
        site.db,
        "PRAGMA foreign_keys = OFF",
        "INSERT INTO repos VALUES ('r-orphan', 'no-such-admin', '/srv/x', 'x', '2026-01-01T00:00:00Z')",
    )
    bad = site.run("snapshot", "--reason", "manual").finished["snapshot_id"]
    execute(site.db, "DELETE FROM repos WHERE id = 'r-orphan'")
    before, snapshots = sha(site.db), site.listing()
    for args, extra in ((("restore", bad, "--force"), {}), (("deploy",), {"RESTORE_SNAPSHOT": bad})):
        for _ in range(2):  # a retry fails the same way and leaves nothing more behind
            run = site.run(*args, **extra)
            assert run.rc == 8, run.stdout
            assert "foreign key" in run.error and bad in run.error and "repos" in run.error
            assert sha(site.db) == before and kept(site.db) == [] and scratch(site.db) == []
            assert site.listing() == snapshots  # no pre-restore snapshot either
    drill = site.run("snapshots", "verify", bad, "--download")
    assert drill.rc == 8 and "foreign key" in drill.error


# --- Item 5: never create or adopt an empty database while the store holds snapshots ------------


def store_with_data(tmp_path: Path) -> tuple[Site, str]:
    """A site whose store holds a snapshot of real data taken elsewhere; its database path empty."""
    elsewhere = Site(tmp_path / "before" / "relayer.db", tmp_path / "store")
    elsewhere.db.parent.mkdir()
    build_legacy_001(elsewhere.db, commands=10)
    snapshot_id = elsewhere.run("snapshot", "--reason", "manual").finished["snapshot_id"]
    return Site(tmp_path / "disk" / "relayer.db", tmp_path / "store"), snapshot_id


def make_blank(db: Path, kind: str) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero-bytes":
        db.write_bytes(b"")
    else:  # a real SQLite file with pages, but no table in it
        execute(
            db, "PRAGMA page_size = 8192", "CREATE TABLE t (x)", "DROP TABLE t", "PRAGMA user_version = 7"
        )
        assert db.stat().st_size > 0


COMMANDS = {
    "deploy": ("deploy",),
    "gate": ("gate", "--", "true"),
    "migrate": ("migrate",),
    "snapshot": ("snapshot", "--reason", "manual"),
}


@pytest.mark.parametrize("kind", ["zero-bytes", "no-tables"])
@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_an_empty_database_is_never_adopted_while_the_store_holds_snapshots(
    tmp_path: Path, command: str, kind: str
) -> None:
    site, snapshot_id = store_with_data(tmp_path)
    make_blank(site.db, kind)
    before, snapshots = sha(site.db), site.listing()
    run = site.run(*COMMANDS[command])
    assert run.rc == 5, run.stdout
    assert f"RESTORE_SNAPSHOT={snapshot_id}" in run.error and "ALLOW_NEW_DATABASE=1" in run.error
    assert sha(site.db) == before and site.listing() == snapshots


def test_an_empty_database_is_created_only_when_asked(tmp_path: Path) -> None:
    site, _ = store_with_data(tmp_path)
    make_blank(site.db, "zero-bytes")
    allowed = site.run("deploy", ALLOW_NEW_DATABASE="1")
    assert allowed.rc == 0 and allowed.finished["new_database"] is True, allowed.stdout
    assert allowed.finished["snapshot_id"] is None  # nothing to go back to: no empty pre-migrate snapshot
    assert allowed.finished["post_migrate_snapshot_id"] and count(site.db) == 0
    other = Site(tmp_path / "other" / "relayer.db", site.store)
    make_blank(other.db, "no-tables")
    assert other.run("migrate", "--allow-new-database").rc == 0 and count(other.db) == 0


@pytest.mark.parametrize("command", ["migrate", "deploy"])
def test_a_mistyped_path_creates_nothing_while_the_store_holds_snapshots(
    tmp_path: Path, command: str
) -> None:
    site, snapshot_id = store_with_data(tmp_path)
    typo = Site(tmp_path / "dsik" / "data" / "relayer.db", site.store)
    run = typo.run(command)
    assert run.rc == 5 and snapshot_id in run.error and "does not exist" in run.error, run.stdout
    assert not (tmp_path / "dsik").exists()
    first_deploy = Site(typo.db, tmp_path / "empty-store").run(command)  # a store without snapshots
    assert first_deploy.rc == 0 and first_deploy.finished["new_database"] is True


def test_restore_fills_an_empty_database_without_force(tmp_path: Path) -> None:
    site, snapshot_id = store_with_data(tmp_path)
    make_blank(site.db, "zero-bytes")
    run = site.run("restore", "--if-db-not-exists")
    assert run.rc == 0 and run.finished["restored"] == snapshot_id and count(site.db) == 10
    make_blank(other := tmp_path / "other" / "relayer.db", "no-tables")
    plain = run_cli("restore", snapshot_id, env=Site(other, site.store).env())
    assert plain.rc == 0 and count(other) == 10


# --- Item 7: nobody else may have the database open during the swap ------------------------------

WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
conn.execute("PRAGMA journal_mode = " + sys.argv[2])
conn.execute("CREATE TABLE IF NOT EXISTS writes (n INTEGER)")
print("writing", flush=True)
n = 0
while True:
    conn.execute("INSERT INTO writes VALUES (?)", (n,))
    n += 1
    time.sleep(0.005)
"""


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_restore_beside_a_writer_without_the_lock_is_refused(tmp_path: Path, mode: str) -> None:
    site = incident(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(site.db), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        for args, extra in (
            (("restore", site.good, "--force"), {}),
            (("deploy",), {"RESTORE_SNAPSHOT": "latest"}),
        ):
            run = site.run(*args, **extra)
            assert run.rc == 3 and run.finished["error_code"] == "database_in_use", run.stdout
            assert f"pid {writer.pid}" in run.error and kept(site.db) == []
        assert count(site.db, "writes") > 0 and count(site.db) == 0  # still the writer's database
        assert site.run("deploy", "--ignore-other-connections").rc == 2  # the start path never overrides
        forced = site.run("restore", site.good, "--force", "--ignore-other-connections")
        assert forced.rc == 0 and f"pid {writer.pid}" in str(
            forced.event("database.in_use_ignored")["holders"]
        )
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize("hold", ["wal-connection", "write-transaction"])
def test_sqlite_locks_reveal_users_that_proc_cannot_show(tmp_path: Path, monkeypatch, hold: str) -> None:
    from job import inuse

    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=5)
    setup = (
        "c.execute('PRAGMA journal_mode = WAL')"
        if hold == "wal-connection"
        else "c.execute('BEGIN IMMEDIATE')"
    )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sqlite3, time; c = sqlite3.connect({str(db)!r}, isolation_level=None); {setup}; "
            "c.execute('SELECT count(*) FROM commands').fetchone(); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert any(f"pid {holder.pid}" in who for who in inuse.others(db))
        monkeypatch.setattr(inuse, "PROC", tmp_path / "no-proc")  # as for another user's process
        assert any("SQLite lock" in who for who in inuse.others(db))
    finally:
        holder.kill()
        holder.wait()
    assert inuse.others(db) == []


# --- Item 8: kept copies are unique, bounded; scratch files never linger -------------------------


def test_a_name_clash_never_fails_a_restore_and_names_still_sort_by_age(tmp_path: Path) -> None:
    site = incident(tmp_path)
    now = time.time()
    taken = []
    for t in range(-2, 60):  # every name a restore in the next minute would want, and a later one
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + t))
        taken += [
            site.db.parent / f"relayer.db.replaced-{stamp}",
            site.db.parent / f"relayer.db.replaced-{stamp}-3",
        ]
    for path in taken:
        path.write_text("taken")
    run = site.run("restore", site.good, "--force", RESTORE_KEEP_REPLACED="1000")
    assert run.rc == 0, run.stdout
    [aside] = run.finished["kept"]
    assert aside.endswith("-4") and count(Path(aside)) == 0  # after every other of its second
    assert all(path.read_text() == "taken" for path in taken)


def test_kept_copies_are_limited_and_their_removal_logged(tmp_path: Path) -> None:
    site = incident(tmp_path)
    for i in range(3):
        execute(site.db, f"INSERT INTO repos VALUES ('extra{i}', (SELECT id FROM admin), '/x', 'x', 'now')")
        run = site.run("restore", site.good, "--force")
        assert run.rc == 0, run.stdout
        [aside] = kept(site.db)
        assert [str(aside)] == run.finished["kept"] and count(aside, "repos") == 6  # what this one replaced
        if i:
            removed = run.event("restore.replaced_removed")
            assert removed["path"] in run.finished["removed"] and removed["keep"] == 1
        Path(f"{aside}-journal").write_bytes(b"a journal kept with it")
    assert kept(site.db) == [aside]
    assert [p.name for p in site.db.parent.glob("*.replaced-*-journal")] == [f"{aside.name}-journal"]
    execute(site.db, "DELETE FROM repos")
    two = site.run("restore", site.good, "--force", RESTORE_KEEP_REPLACED="2")
    assert two.rc == 0 and len(kept(site.db)) == 2
    bad = site.run("restore", site.good, "--force", RESTORE_KEEP_REPLACED="one")
    assert bad.rc == 2 and "RESTORE_KEEP_REPLACED" in bad.error


def test_the_only_copy_of_a_database_that_could_not_be_snapshotted_is_kept(tmp_path: Path) -> None:
    from tests.test_snapshot import corrupt

    site = Site(tmp_path / "data" / "relayer.db", tmp_path / "store")
    site.db.parent.mkdir()
    build_legacy_001(site.db, commands=3000)
    good = site.run("snapshot").finished["snapshot_id"]
    corrupt(site.db)
    run = site.run("restore", good, "--force", RESTORE_KEEP_REPLACED="0")
    assert run.rc == 0, run.stdout
    assert run.finished["pre_restore_snapshot_id"] is None and len(kept(site.db)) == 1
    run.event("restore.replaced_kept")


LOCK_TAKERS = {
    "migrate": ("migrate",),
    "snapshot": ("snapshot", "--reason", "manual"),
    "deploy": ("deploy",),
    "restore": ("restore", "--force"),
}


@pytest.mark.parametrize("command", LOCK_TAKERS, ids=LOCK_TAKERS)
def test_every_command_that_takes_the_lock_removes_restore_leftovers(tmp_path: Path, command: str) -> None:
    site = incident(tmp_path)
    killed(("job.catalog.prove", "after", "-"), "restore", site.good, "--force", env=site.env())
    left = scratch(site.db)
    assert left and sum(p.stat().st_size for p in left) > 0  # a full-size download, left behind
    run = site.run(*LOCK_TAKERS[command])
    assert run.rc == 0, run.stdout
    assert scratch(site.db) == [] and {
        e["path"] for e in run.events if e["event"] == "restore.scratch_removed"
    }


def test_a_restore_record_cut_short_is_removed_too(tmp_path: Path) -> None:
    site = incident(tmp_path)
    torn = site.db.parent / ".relayer-job-restored-manual.tmp"  # a full disk stopped its write
    torn.write_bytes(b"")
    run = site.run("snapshot")
    assert run.rc == 0 and not torn.exists()
    assert str(torn) in {e["path"] for e in run.events if e["event"] == "restore.scratch_removed"}


# --- Issue 11 item 3: point-in-time restore -------------------------------------------------------

TIMES = {10: "2025-03-01T08:00:00Z", 20: "2025-03-01T09:00:00Z", 30: "2025-03-01T09:30:15Z"}


def timed_store(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """A store whose snapshots were taken at TIMES, each holding its own number of commands."""
    store = tmp_path / "store"
    ids = {}
    for rows, created in TIMES.items():
        source = tmp_path / f"source-{rows}" / "relayer.db"
        source.parent.mkdir()
        build_legacy_001(source, commands=rows)
        made = run_cli("snapshot", env=Site(source, store).env()).finished["snapshot_id"]
        moved = created.replace("-", "").replace(":", "") + made[16:]
        (store / "snapshots" / made).rename(store / "snapshots" / moved)
        manifest = store / "snapshots" / moved / "manifest.json"
        manifest.write_text(
            json.dumps({**json.loads(manifest.read_text()), "id": moved, "created_at": created})
        )
        ids[rows] = moved
    return store, ids


def test_restore_before_a_time_picks_the_newest_snapshot_strictly_before_it(tmp_path: Path) -> None:
    store, ids = timed_store(tmp_path)
    cases = [
        (("--before", "2025-03-01T09:00Z"), 10),  # 09:00:00 itself is not before 09:00
        (("before:2025-03-01T09:00:01Z",), 20),
        (("--before", "2025-03-01 09:30:15+00:00"), 20),
        (("--before", "2025-03-01t09:31z"), 30),
    ]
    for n, (args, rows) in enumerate(cases):
        target = Site(tmp_path / f"target-{n}" / "relayer.db", store)
        run = target.run("restore", *args)
        assert run.rc == 0 and run.finished["restored"] == ids[rows], run.stdout
        assert count(target.db) == rows
    none = Site(tmp_path / "none" / "relayer.db", store).run("restore", "--before", "2025-03-01T08:00Z")
    assert none.rc == 2 and "taken before 2025-03-01T08:00:00Z" in none.error


def test_restore_snapshot_before_is_resolved_once(tmp_path: Path) -> None:
    store, ids = timed_store(tmp_path)
    site = Site(tmp_path / "disk" / "relayer.db", store)
    env = {"RESTORE_SNAPSHOT": "before:2025-03-01T09:15Z"}
    run = site.run("deploy", **env)
    assert run.rc == 0 and run.finished["restored"] == ids[20], run.stdout
    record = site.record()
    assert record == {**record, "request": "before:2025-03-01T09:15:00Z", "id": ids[20], "state": "done"}
    again = site.run("deploy", **env)
    assert again.rc == 0 and again.finished["restored"] is None


def test_snapshots_list_since_until_are_inclusive(tmp_path: Path) -> None:
    store, ids = timed_store(tmp_path)
    site = Site(tmp_path / "disk" / "relayer.db", store)

    def listed(*args: str) -> list[str]:
        run = site.run("snapshots", "list", "--json", *args)
        assert run.rc == 0, run.stderr
        return [r["id"] for r in json.loads(run.stdout)]

    assert listed("--since", "2025-03-01T08:00Z", "--until", "2025-03-01T09:00:00Z") == [ids[20], ids[10]]
    assert listed("--since", "2025-03-01T08:00:01Z") == [ids[30], ids[20]]
    assert listed("--until", "2025-03-01T08:59:59Z") == [ids[10]]
    assert listed() == [ids[30], ids[20], ids[10]]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("restore", "--before", "2025-03-01T09:00"), "--before"),  # no zone: not guessed
        (("restore", "--before", "2025-03-01T09:00+02:00"), "--before"),
        (("restore", "before:2025-02-30T09:00Z"), "restore ID|latest"),
        (("restore", "latest", "--before", "2025-03-01T09:00Z"), "not both"),
        (("snapshots", "list", "--since", "yesterday"), "--since"),
        (("snapshots", "list", "--since", "2025-03-02T00:00Z", "--until", "2025-03-01T00:00Z"), "--until"),
    ],
)
def test_times_that_are_not_utc_or_not_times_are_usage_errors(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    run = Site(tmp_path / "disk" / "relayer.db", tmp_path / "store").run(*args)
    assert run.rc == 2 and named in run.error, run.stdout + run.stderr
    assert not (tmp_path / "disk").exists()


def test_status_reports_an_empty_database_the_gate_would_refuse(tmp_path: Path) -> None:
    site = incident(tmp_path)
    site.db.write_bytes(b"")
    status = site.run("status")
    assert status.rc == 5 and "is an empty file" in status.error and site.good in status.error


def test_a_second_restore_on_a_small_disk_is_not_blocked_by_the_first_ones_kept_copy(tmp_path: Path) -> None:
    """RESTORE_KEEP_REPLACED=1: the copy the last restore kept makes way before the space check, as
    it would have after this restore anyway."""
    import subprocess as sp

    disk = tmp_path / "disk"
    disk.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=44m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        site = Site(disk / "relayer.db", tmp_path / "store")
        build_legacy_001(site.db, commands=20)
        execute(
            site.db,
            "CREATE TABLE pad (b BLOB)",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) "
            "INSERT INTO pad SELECT randomblob(1 << 20) FROM n",
        )
        taken = site.run("snapshot")
        assert taken.rc == 0, taken.stdout
        for attempt in range(3):
            execute(site.db, f"UPDATE commands SET status = 'x{attempt}' WHERE rowid = 1")
            run = site.run("restore", taken.finished["snapshot_id"], "--force")
            assert run.rc == 0, (attempt, run.stdout)
            assert len(kept(site.db)) == 1
    finally:
        sp.run(["umount", "-l", str(disk)], check=False)


def test_a_restored_copy_that_cannot_be_made_durable_is_exit_4_naming_it(tmp_path: Path) -> None:
    from job import restore
    from job.errors import EnvironmentRefused

    missing = tmp_path / "gone.db"
    with pytest.raises(EnvironmentRefused, match=r"cannot make the restored copy .*gone\.db durable") as err:
        restore._fsync(missing)
    assert err.value.exit_code == 4 and "nothing was replaced" in str(err.value)
