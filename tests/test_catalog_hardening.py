"""Hostile or odd store contents: damaged snapshots never count as backups (list, latest, restore,
prune), stray folders cannot push new ids out of the valid range, and snapshot ids typed by a user
are checked before they reach the store."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from job import catalog, retention
from job.config import S3Options
from job.deadline import Deadline
from job.errors import UsageError, VerificationFailed
from job.manifest import ID_PATTERN, Manifest, id_time, parse_choice
from job.snapshot import new_id
from job.store import open_store
from tests.conftest import base_env, run_cli
from tests.support.legacy import build_legacy_001
from tests.test_snapshot import snap, snapshot_versions


def folder(store: Path, snapshot_id: str) -> Path:
    return store / "snapshots" / snapshot_id


def read(store: Path, snapshot_id: str) -> dict[str, Any]:
    return json.loads((folder(store, snapshot_id) / "manifest.json").read_text())


def write(store: Path, snapshot_id: str, manifest: dict[str, Any]) -> None:
    (folder(store, snapshot_id) / "manifest.json").write_text(json.dumps(manifest))


def three_snapshots(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=20)
    ids = snapshot_versions(db, 3, lambda: snap(run_cli, db, store).finished["snapshot_id"])
    return db, store, ids


def cli(store: Path, *args: str) -> Any:
    return run_cli(*args, "--store", f"file:{store}")


DAMAGE: dict[str, Callable[[Path, str, str], None]] = {
    "manifest not json": lambda s, i, _: (folder(s, i) / "manifest.json").write_text("{not json"),
    "manifest of another snapshot": lambda s, i, other: write(s, i, read(s, other)),
    "size of the wrong type": lambda s, i, _: write(s, i, {**read(s, i), "compressed_size": "123"}),
    "data missing": lambda s, i, _: (folder(s, i) / "relayer.db.zst").unlink(),
    "data of the wrong size": lambda s, i, _: (folder(s, i) / "relayer.db.zst").write_bytes(b"short"),
}


@pytest.mark.parametrize("damage", DAMAGE.keys())
def test_prune_keeps_the_newest_restorable_snapshot_and_damaged_ones_unless_asked(
    tmp_path: Path, damage: str
) -> None:
    _, store, (oldest, middle, newest) = three_snapshots(tmp_path)
    DAMAGE[damage](store, newest, oldest)

    applied = cli(store, "snapshots", "prune", "--keep-last", "1", "--apply", "--json")
    assert applied.rc == 0, applied.stdout + applied.stderr
    plan = json.loads(applied.stdout)
    assert plan["keep"] == [middle] and "newest restorable" in plan["kept_because"][middle]
    assert plan["delete"] == [oldest] and plan["damaged"] == [newest]
    assert plan["problems"][newest]
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == [middle, newest]
    assert (folder(store, middle) / "manifest.json").exists()
    assert (folder(store, middle) / "relayer.db.zst").exists()
    assert applied.event("snapshot.damaged")["id"] == newest

    cleaned = cli(store, "snapshots", "prune", "--keep-last", "1", "--apply", "--delete-damaged", "--json")
    assert cleaned.rc == 0 and json.loads(cleaned.stdout)["damaged"] == [newest]
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == [middle]


def test_retention_always_keeps_the_newest_and_says_why() -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    candidates = [
        retention.Candidate(f"202611{day}T000000Z-00000000", now - timedelta(days=25 - day), reason)
        for day, reason in ((20, "pre-migrate"), (22, "pre-migrate"), (24, "manual"))
    ]
    newest, middle, _ = (c.id for c in reversed(candidates))
    assert retention.keep(candidates, retention.Policy(keep_last=0), now) == {newest: ["newest restorable"]}
    assert retention.keep(candidates, retention.Policy(keep_last=2), now) == {
        newest: ["newest restorable", "one of the last 2"],
        middle: ["one of the last 2"],
    }
    by_age = retention.keep(candidates, retention.Policy(keep_last=1, keep_days=3.5), now)
    assert sorted(by_age) == [middle, newest] and by_age[middle] == ["pre-migrate younger than 3.5 days"]
    assert retention.keep([], retention.Policy(keep_last=3), now) == {}


def test_prune_prints_a_table_unless_json_is_asked(tmp_path: Path) -> None:
    _, store, (oldest, middle, newest) = three_snapshots(tmp_path)
    (folder(store, oldest) / "manifest.json").write_text("[]")
    stray = folder(store, "20200101T000000Z-0badf00d")
    stray.mkdir()
    (stray / "relayer.db.zst").write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stray / "relayer.db.zst", (old, old))
    run = cli(store, "snapshots", "prune", "--keep-last", "1")
    assert run.rc == 0
    with pytest.raises(ValueError):
        json.loads(run.stdout)
    lines = run.stdout.splitlines()

    def row(snapshot_id: str) -> str:
        [found] = [line for line in lines if snapshot_id in line]
        return found

    assert row(newest).split()[0] == "keep" and "newest restorable" in row(newest)
    assert row(middle).split()[0] == "delete"
    assert row(oldest).split()[0] == "damaged" and "--delete-damaged" in run.stdout
    assert row("20200101T000000Z-0badf00d").split()[0] == "leftover"
    assert "dry run" in run.stdout
    assert len(list((store / "snapshots").iterdir())) == 4  # a dry run deletes nothing


@pytest.mark.parametrize(
    ("stray", "committed"),
    [
        ("99991231T235959Z-ffffffff", False),
        ("29990101T000000Z-00000000", True),
        ("20261340T256199Z-0badc0de", False),
        ("20261340T256199Z-0badc0de", True),
    ],
    ids=["year-9999", "far-future-committed", "not-a-time", "not-a-time-committed"],
)
def test_a_stray_folder_cannot_break_or_hide_new_snapshots(
    tmp_path: Path, stray: str, committed: bool
) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=20)
    first = snap(run_cli, db, store).finished["snapshot_id"]
    folder(store, stray).mkdir()
    data = (folder(store, first) / "relayer.db.zst").read_bytes()
    (folder(store, stray) / "relayer.db.zst").write_bytes(data)
    if committed:
        write(store, stray, {**read(store, first), "id": stray})

    again = snap(run_cli, db, store)  # same content: dedupe must still find the real newest
    assert again.rc == 0, again.stdout
    assert again.finished["snapshot_id"] == first and again.finished["unchanged"] is True

    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM commands WHERE rowid % 2 = 0")
    conn.commit()
    conn.close()
    changed = snap(run_cli, db, store)
    assert changed.rc == 0, changed.stdout
    new = changed.finished["snapshot_id"]
    taken = id_time(new)
    assert ID_PATTERN.match(new) and taken is not None
    assert abs(taken - datetime.now(UTC)) < timedelta(minutes=5) and new > first

    listing = cli(store, "snapshots", "list", "--json")
    assert [r["id"] for r in json.loads(listing.stdout)] == [new, first]
    restored = tmp_path / "restored.db"
    run = run_cli("restore", "latest", "--db", str(restored), "--store", f"file:{store}")
    assert run.rc == 0 and run.finished["restored"] == new


def test_new_ids_ignore_an_after_that_is_invalid_or_in_the_future() -> None:
    taken = time.gmtime(1_700_000_000)
    for after in ("99991231T235959Z-ffffffff", "20231114T231320Z-00000000", "20231340T000000Z-00000000"):
        assert new_id(taken, "a" * 64, after=after) == "20231114T221320Z-aaaaaaaa"
    assert new_id(taken, "a" * 64, after="20231114T222320Z-00000000") == "20231114T222321Z-aaaaaaaa"


def valid_manifest(snapshot_id: str = "20261125T084512Z-3fa71d32") -> dict[str, Any]:
    return {
        "id": snapshot_id,
        "created_at": "2026-11-25T08:45:12Z",
        "reason": "manual",
        "source_db": "/data/relayer.db",
        "raw_size": 4096,
        "page_size": 4096,
        "page_count": 1,
        "journal_mode": "wal",
        "sqlite_version": "3.45.0",
        "raw_sha256": "a" * 64,
        "compressed_size": 100,
        "compressed_sha256": "b" * 64,
        "compression": {"algorithm": "zstd", "level": 1},
        "quick_check": "ok",
        "migrations": [{"name": "001_init.sql", "checksum": None}],
        "schema_version": 1,
        "job_version": "0.1.0",
        "deploy": {"RENDER_GIT_COMMIT": "abc"},
        "format": "relayer-job.snapshot/1",
    }


WRONG = {
    "id": 20261125,
    "created_at": "yesterday",
    "reason": None,
    "raw_size": "4096",
    "page_size": 4096.0,
    "page_count": True,
    "raw_sha256": "not-a-digest",
    "compressed_size": -1,
    "compression": ["zstd"],
    "migrations": [{"name": 1}],
    "schema_version": "1",
    "deploy": {"RENDER_GIT_COMMIT": 5},
}


@pytest.mark.parametrize(("name", "value"), WRONG.items(), ids=WRONG.keys())
def test_every_manifest_field_is_checked(name: str, value: object) -> None:
    good = valid_manifest()
    assert Manifest.from_json(json.dumps(good).encode(), where="m", snapshot_id=good["id"]).id == good["id"]
    with pytest.raises(VerificationFailed, match=name):
        Manifest.from_json(json.dumps({**good, name: value}).encode(), where="m", snapshot_id=good["id"])


@pytest.mark.parametrize(
    "document",
    [
        {k: v for k, v in valid_manifest().items() if k != "raw_sha256"},
        {**valid_manifest(), "extra": 1},
        valid_manifest("20261125T084512Z-00000000"),
        ["a list"],
        "[" * 100_000,
    ],
    ids=["missing-field", "unknown-field", "id-of-another-snapshot", "not-an-object", "deeply-nested"],
)
def test_malformed_manifests_are_verification_failures(document: object) -> None:
    data = document.encode() if isinstance(document, str) else json.dumps(document).encode()
    with pytest.raises(VerificationFailed):
        Manifest.from_json(data, where="m", snapshot_id="20261125T084512Z-3fa71d32")


def test_an_invalid_manifest_is_passed_over_everywhere_and_fails_verify(tmp_path: Path) -> None:
    _, store, (oldest, middle, newest) = three_snapshots(tmp_path)
    write(store, newest, {**read(store, newest), "schema_version": "3", "deploy": None})
    write(store, oldest, read(store, middle))  # claims to be `middle`

    listing = cli(store, "snapshots", "list", "--json")
    assert listing.rc == 0 and [r["id"] for r in json.loads(listing.stdout)] == [middle]
    assert {e["id"] for e in listing.events if e["event"] == "snapshot.damaged"} == {newest, oldest}
    for damaged in (newest, oldest):
        verify = cli(store, "snapshots", "verify", damaged)
        assert verify.rc == 8 and "invalid" in verify.error
    restored = tmp_path / "restored.db"
    run = run_cli("restore", "latest", "--db", str(restored), "--store", f"file:{store}")
    assert run.rc == 0 and run.finished["restored"] == middle
    prune = cli(store, "snapshots", "prune", "--keep-last", "1", "--json")
    assert prune.rc == 0 and json.loads(prune.stdout)["keep"] == [middle]
    found = catalog.latest(open_store(f"file:{store}", S3Options(), Deadline(60)))
    assert found is not None and found.id == middle


BAD_IDS = [
    "..",
    "../x",
    "x/y",
    "latest/..",
    "LATEST",
    "",
    "20261125T084512Z",
    "20261125T084512Z-3FA71D32",
    "20261340T000000Z-00000000",
    "20261125T084512Z-3fa71d32/../x",
    "\u0662\u0660\u0662\u0666\u0661\u0661\u0662\u0665T084512Z-3fa71d32",  # digits, but not 0-9
]


def test_only_ids_and_latest_are_snapshot_choices() -> None:
    assert parse_choice(" latest ", "X") == "latest"
    assert parse_choice("20261125T084512Z-3fa71d32", "X") == "20261125T084512Z-3fa71d32"
    for bad in BAD_IDS:
        with pytest.raises(UsageError, match=r"^SOURCE: .* is not a snapshot id"):
            parse_choice(bad, "SOURCE")


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("restore", "../x", "--force"), {}, "restore ID|latest"),
        (("snapshots", "verify", "x/y"), {}, "verify ID|latest"),
        (("deploy",), {"RESTORE_SNAPSHOT": "../x"}, "RESTORE_SNAPSHOT"),
        (("deploy", "--restore", ".."), {}, "--restore"),
    ],
    ids=["restore", "verify", "RESTORE_SNAPSHOT", "--restore"],
)
def test_a_snapshot_id_from_a_user_is_checked_before_use(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    db = tmp_path / "relayer.db"
    run = run_cli(*args, "--db", str(db), "--store", f"file:{tmp_path / 'store'}", env=base_env(**env))
    assert run.rc == 2 and named in run.error and "is not a snapshot id" in run.error, run.stdout
    assert not db.exists() and not (tmp_path / "store").exists()
