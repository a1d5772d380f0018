"""Restoring a snapshot: verified before anything live is touched, the old database kept."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.dbtools import KILLED_WRITER, TOTAL, bank_total, integrity, make_bank, scalar
from tests.support.legacy import build_legacy_001, dump


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setup(cli, tmp_path: Path) -> tuple[Path, str, str]:
    db, store = tmp_path / "data" / "relayer.db", f"file:{tmp_path / 'store'}"
    db.parent.mkdir()
    build_legacy_001(db, commands=100)
    snapshot_id = cli("snapshot", "--db", str(db), "--store", store).finished["snapshot_id"]
    return db, store, snapshot_id


def manifest(tmp_path: Path, snapshot_id: str) -> dict[str, object]:
    return json.loads((tmp_path / "store" / "snapshots" / snapshot_id / "manifest.json").read_text())


def test_restore_onto_an_empty_disk(cli, tmp_path: Path) -> None:
    db, store, snapshot_id = setup(cli, tmp_path)
    db.unlink()
    run = cli("restore", "--db", str(db), "--store", store)
    assert run.rc == 0, run.stdout
    assert run.finished["restored"] == snapshot_id and run.finished["kept"] == []
    assert sha(db) == manifest(tmp_path, snapshot_id)["raw_sha256"]
    assert not list(db.parent.glob(".relayer-job-*.db"))  # no scratch left behind


def test_existing_database_needs_force_and_is_kept(cli, tmp_path: Path) -> None:
    db, store, snapshot_id = setup(cli, tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM commands")  # the mistake we are restoring from
    conn.commit()
    conn.close()
    mistaken = dump(db)
    refused = cli("restore", "--db", str(db), "--store", store, snapshot_id)
    assert refused.rc == 2 and "--force" in refused.error and dump(db) == mistaken
    skipped = cli("restore", "--db", str(db), "--store", store, "--if-db-not-exists")
    assert skipped.rc == 0 and skipped.finished["skipped"] == "database exists"

    run = cli("restore", "--db", str(db), "--store", store, snapshot_id, "--force")
    assert run.rc == 0, run.stdout
    assert sha(db) == manifest(tmp_path, snapshot_id)["raw_sha256"]
    [kept] = run.finished["kept"]
    assert dump(Path(kept)) == mistaken
    pre = manifest(tmp_path, run.finished["pre_restore_snapshot_id"])
    assert pre["reason"] == "pre-restore"
    listing = json.loads(cli("snapshots", "list", "--json", "--store", store).stdout)
    assert listing[0]["id"] == run.finished["pre_restore_snapshot_id"]


def test_hot_journal_of_the_old_database_never_touches_the_restored_one(cli, tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", f"file:{tmp_path / 'store'}"
    make_bank(db, padding_rows=3000)
    snapshot_id = cli("snapshot", "--db", str(db), "--store", store).finished["snapshot_id"]
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "dirty"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert Path(f"{db}-journal").exists()
    run = cli("restore", "--db", str(db), "--store", store, snapshot_id, "--force")
    assert run.rc == 0, run.stdout
    assert not Path(f"{db}-journal").exists()
    assert integrity(db) == "ok" and bank_total(db) == TOTAL
    assert sha(db) == manifest(tmp_path, snapshot_id)["raw_sha256"]


def test_damaged_snapshot_is_refused_and_the_live_database_untouched(cli, tmp_path: Path) -> None:
    db, store, snapshot_id = setup(cli, tmp_path)
    data = tmp_path / "store" / "snapshots" / snapshot_id / "relayer.db.zst"
    blob = bytearray(data.read_bytes())
    blob[-20] ^= 0x01
    data.write_bytes(bytes(blob))
    before = sha(db)
    run = cli("restore", "--db", str(db), "--store", store, "--force")
    assert run.rc == 8 and "SHA-256" in run.error
    assert sha(db) == before and not list(db.parent.glob("relayer.db.replaced-*"))


def test_damaged_live_database_is_still_replaced_and_kept(cli, tmp_path: Path) -> None:
    from tests.test_snapshot import corrupt

    db, store, _ = setup(cli, tmp_path)
    corrupt(db)
    run = cli("restore", "--db", str(db), "--store", store, "--force")
    assert run.rc == 0, run.stdout
    run.event("restore.pre_restore_snapshot_failed")
    assert run.finished["pre_restore_snapshot_id"] is None and len(run.finished["kept"]) == 1
    assert integrity(db) == "ok"


def test_restore_script_proves_then_restores(tmp_path: Path) -> None:
    from tests.conftest import base_env, run_cli
    from tests.support.legacy import REPO

    db, store, snapshot_id = setup(run_cli, tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM commands")
    conn.commit()
    conn.close()
    venv_bin = str(Path(sys.executable).parent)
    env = base_env(DATABASE_PATH=str(db), SNAPSHOT_STORE=store, PATH=f"{venv_bin}:/usr/bin:/bin")
    no_tty = subprocess.run(
        ["bash", str(REPO / "scripts" / "restore.sh"), snapshot_id],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr
    assert sha(db) != manifest(tmp_path, snapshot_id)["raw_sha256"]
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "restore.sh"), snapshot_id, "--yes"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sha(db) == manifest(tmp_path, snapshot_id)["raw_sha256"]
    assert "integrity_check and foreign_key_check ok" in done.stdout and "schema version  1" in done.stdout


def test_deploy_restore_flag_restores_once_then_migrates(cli, tmp_path: Path) -> None:
    db, store, snapshot_id = setup(cli, tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM commands")
    conn.commit()
    conn.close()
    run = cli("deploy", "--db", str(db), "--store", store, "--restore", snapshot_id)
    assert run.rc == 0, run.stdout
    assert run.finished["restored"] == snapshot_id and run.finished["schema_version"] == 4
    assert int(str(scalar(db, "SELECT count(*) FROM commands"))) == 100
    record = json.loads((db.parent / ".relayer-job-restored").read_text())
    assert record["request"] == record["id"] == snapshot_id and record["state"] == "done"
    again = cli("deploy", "--db", str(db), "--store", store, "--restore", snapshot_id)
    assert again.rc == 0 and again.finished["restored"] is None


def test_restored_file_keeps_the_mode_of_the_database_it_replaces(cli, tmp_path: Path) -> None:
    import os
    import stat

    db, store, _ = setup(cli, tmp_path)
    db.chmod(0o660)
    assert cli("restore", "--db", str(db), "--store", store, "--force").rc == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o660
    db.unlink()
    assert cli("restore", "--db", str(db), "--store", store).rc == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(db.stat().st_mode) == 0o666 & ~umask


def test_operator_mistakes_get_messages_that_name_the_setting(cli, tmp_path: Path) -> None:
    db, store, snapshot_id = setup(cli, tmp_path)
    empty = cli("restore", "--db", str(db), "--store", f"file:{tmp_path / 'typo'}", "--force")
    assert empty.rc == 2 and "SNAPSHOT_STORE" in empty.error
    wrong_id = cli("deploy", "--db", str(db), "--store", store, "--restore", " 20990101T000000Z-00000000 ")
    assert wrong_id.rc == 2 and "RESTORE_SNAPSHOT=20990101T000000Z-00000000" in wrong_id.error
    assert "not found" in wrong_id.error
    picked = cli("restore", "--db", str(db), "--store", store, "--force")
    assert picked.event("restore.selected")["id"] == snapshot_id


def test_status_json_prints_an_object_even_when_it_fails(cli, tmp_path: Path) -> None:
    bogus = tmp_path / "relayer.db"
    bogus.write_bytes(b"garbage" * 1000)
    run = cli("status", "--db", str(bogus), "--json")
    assert run.rc == 5 and json.loads(run.stdout)["exit_code"] == 5
