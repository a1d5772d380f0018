"""Snapshots through the real S3 path: a SeaweedFS server on 127.0.0.1, over HTTP and HTTPS, with
faults injected by a proxy. No patching of boto3."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import base_env, cli_argv, run_cli
from tests.support.dbtools import decompress, incompressible_db, integrity
from tests.support.legacy import REPO, build_legacy_001
from tests.test_snapshot import snapshot_versions


def env_for(server, bucket: str, endpoint: str | None = None, **extra: str) -> dict[str, str]:
    return base_env(**server.env(endpoint), SNAPSHOT_STORE=f"s3://{bucket}/relayer", **extra)


def manifests(server, bucket: str) -> list[dict[str, object]]:
    client = server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="relayer/snapshots/").get("Contents", [])
    return [
        json.loads(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
        for o in listed
        if o["Key"].endswith("/manifest.json")
    ]


def assert_intact(server, bucket: str, manifest: dict[str, object], tmp_path: Path) -> None:
    """Download with an independent client, check the manifest's SHA-256 and integrity_check."""
    packed, restored = tmp_path / "check.zst", tmp_path / "check.db"
    key = f"relayer/snapshots/{manifest['id']}/relayer.db.zst"
    server.client().download_file(bucket, key, str(packed))
    assert decompress(packed, restored) == manifest["raw_sha256"]
    assert integrity(restored) == "ok"
    packed.unlink()
    restored.unlink()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "relayer.db"
    build_legacy_001(path, commands=300)
    return path


def test_snapshot_over_https_round_trip_then_unchanged(s3_server, bucket, db, tmp_path) -> None:
    env = env_for(s3_server, bucket, s3_server.https_endpoint)
    first = run_cli("snapshot", "--db", str(db), env=env)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.event("snapshot.uploaded")["checksum_verified_by_store"] is True
    [manifest] = manifests(s3_server, bucket)
    assert manifest["id"] == first.finished["snapshot_id"]
    assert_intact(s3_server, bucket, manifest, tmp_path)
    second = run_cli("snapshot", "--db", str(db), env=env)
    assert second.rc == 0 and second.finished["unchanged"] is True
    assert len(manifests(s3_server, bucket)) == 1
    listing = run_cli("snapshots", "list", "--json", env=env)
    assert [r["id"] for r in json.loads(listing.stdout)] == [manifest["id"]]
    drill = run_cli("snapshots", "verify", "latest", "--download", env=env)
    assert drill.rc == 0 and drill.finished["integrity_check"] == "ok"


def test_checksum_mode_when_required_and_multipart(s3_server, bucket, tmp_path) -> None:
    db = incompressible_db(tmp_path / "big.db", 13)  # 3 parts
    multipart = env_for(s3_server, bucket, S3_PART_SIZE_MB="5")
    run = run_cli("snapshot", "--db", str(db), env=multipart)
    assert run.rc == 0, run.stdout
    assert run.event("snapshot.uploaded")["checksum_verified_by_store"] is True  # composite checksum
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM blobs WHERE rowid < 20")
    conn.commit()
    conn.close()
    relaxed = env_for(s3_server, bucket, S3_PART_SIZE_MB="5", S3_CHECKSUM_MODE="when_required")
    run = run_cli("snapshot", "--db", str(db), env=relaxed)
    assert run.rc == 0 and run.event("snapshot.uploaded")["checksum_verified_by_store"] is False
    for manifest in manifests(s3_server, bucket):
        assert_intact(s3_server, bucket, manifest, tmp_path)


FAULTS = {
    "put-503": ("PUT", r"relayer\.db\.zst$", "slowdown503", None),
    "put-reset": ("PUT", r"relayer\.db\.zst$", "reset", None),
    "manifest-put-500": ("PUT", r"manifest\.json$", "error500", None),
    "upload-part-503": ("PUT", r"relayer\.db\.zst$", "slowdown503", r"partNumber=2"),
    "complete-multipart-500": ("POST", r"relayer\.db\.zst$", "error500", r"uploadId"),
    "head-reset": ("HEAD", r"relayer\.db\.zst$", "reset", None),
    "list-close": ("GET", r"^/[^/]+/?$", "close", r"list-type=2"),
    "get-manifest-truncated": ("GET", r"manifest\.json$", "truncate", None),
    "get-manifest-stall": ("GET", r"manifest\.json$", "stall", None),
}


@pytest.mark.parametrize("fault", FAULTS.keys())
def test_transient_faults_are_survived_with_the_snapshot_intact(
    s3_server, bucket, proxy, tmp_path, fault: str
) -> None:
    db = incompressible_db(tmp_path / "relayer.db", 6)  # 2 parts
    env = env_for(s3_server, bucket, proxy.endpoint, S3_PART_SIZE_MB="5")
    if fault.startswith("get-manifest"):
        assert run_cli("snapshot", "--db", str(db), env=env).rc == 0  # a manifest to read back
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM blobs WHERE rowid = 1")
        conn.commit()
        conn.close()
    method, path, action, query = FAULTS[fault]
    rule = proxy.add_rule(method, path, action, query_regex=query, stall_seconds=25)
    run = run_cli("snapshot", "--db", str(db), env=env)
    assert run.rc == 0, run.stdout + run.stderr
    assert rule.fired == 1
    found = manifests(s3_server, bucket)
    assert run.finished["snapshot_id"] in [m["id"] for m in found]
    for manifest in found:
        assert_intact(s3_server, bucket, manifest, tmp_path)


def test_a_part_changed_on_the_way_is_refused_by_the_store(s3_server, bucket, proxy, tmp_path) -> None:
    """Over plain HTTP the parts' bodies are not hashed again for the signature: their signed SHA-256
    header is what protects them, and the store refuses a part that does not match it."""
    db = incompressible_db(tmp_path / "relayer.db", 6)  # 2 parts
    env = env_for(s3_server, bucket, proxy.endpoint, S3_PART_SIZE_MB="5")
    rule = proxy.add_rule(
        "PUT", r"relayer\.db\.zst$", "corrupt_request_body", query_regex=r"partNumber=2", times=None
    )
    run = run_cli("snapshot", "--db", str(db), env=env)
    assert rule.fired >= 1
    assert run.rc == 6 and "BadDigest" in run.finished["error"], run.stdout
    assert manifests(s3_server, bucket) == []  # nothing committed
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # and the parts were dropped


def test_truncated_download_during_verify_is_retried(s3_server, bucket, proxy, db, tmp_path) -> None:
    env = env_for(s3_server, bucket, proxy.endpoint)
    assert run_cli("snapshot", "--db", str(db), env=env).rc == 0
    rule = proxy.add_rule("GET", r"relayer\.db\.zst$", "truncate")
    run = run_cli("snapshots", "verify", "--download", env=env)
    assert run.rc == 0, run.stdout + run.stderr
    assert rule.fired == 1 and proxy.count("GET", r"relayer\.db\.zst$") >= 2


def test_permanent_outage_ends_within_the_deadline_without_a_manifest(s3_server, bucket, proxy, db) -> None:
    proxy.add_rule(None, r".*", "error500", times=None)
    env = env_for(s3_server, bucket, proxy.endpoint, JOB_DEADLINE="15")
    started = time.monotonic()
    run = run_cli("snapshot", "--db", str(db), env=env)
    elapsed = time.monotonic() - started
    assert run.rc in (6, 9), run.stdout
    assert elapsed < 15 + 25  # deadline, plus at most one in-flight request's timeouts
    assert run.events and any(e["event"] == "store.retrying" for e in run.events)
    assert "InternalError" in run.error or "deadline" in run.error
    assert manifests(s3_server, bucket) == []


def test_wrong_credentials_fail_fast_and_the_secret_is_never_printed(s3_server, bucket, proxy, db) -> None:
    wrong = "wrong-secret-" + "x" * 20
    env = {**env_for(s3_server, bucket, proxy.endpoint), "AWS_SECRET_ACCESS_KEY": wrong}
    started = time.monotonic()
    run = run_cli("snapshot", "--db", str(db), env=env)
    assert run.rc == 6 and time.monotonic() - started < 10
    assert "SignatureDoesNotMatch" in run.error and "AWS_SECRET_ACCESS_KEY" in run.error
    assert len(proxy.requests) <= 2  # no retry storm
    assert wrong not in run.stdout + run.stderr
    assert s3_server.secret_key not in run.stdout + run.stderr
    assert not any(e["event"] == "store.retrying" for e in run.events)
    missing = run_cli("snapshot", "--db", str(db), env=env_for(s3_server, "no-such-bucket-here"))
    assert missing.rc == 6 and "NoSuchBucket" in missing.error


def test_sigkill_during_upload_leaves_no_snapshot_and_a_rerun_succeeds(s3_server, bucket, proxy, db) -> None:
    env = env_for(s3_server, bucket, proxy.endpoint)
    proxy.add_rule("PUT", r"relayer\.db\.zst$", "stall", stall_seconds=30)
    job = subprocess.Popen(
        cli_argv("snapshot", "--db", str(db)),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while proxy.count("PUT", r"relayer\.db\.zst$") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.count("PUT", r"relayer\.db\.zst$") == 1
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=30)
    assert manifests(s3_server, bucket) == []
    listing = run_cli("snapshots", "list", "--json", env=env)
    assert json.loads(listing.stdout) == []
    proxy.clear()
    rerun = run_cli("snapshot", "--db", str(db), env=env)
    assert rerun.rc == 0
    assert [m["id"] for m in manifests(s3_server, bucket)] == [rerun.finished["snapshot_id"]]


def test_prune_on_s3_removes_leftovers_and_aborts_stale_uploads(s3_server, bucket, db, monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    from job import catalog, retention
    from job.config import S3Options
    from job.deadline import Deadline
    from job.store import open_store

    env = env_for(s3_server, bucket)
    ids = snapshot_versions(
        db, 3, lambda: run_cli("snapshot", "--db", str(db), env=env).finished["snapshot_id"]
    )
    client = s3_server.client()
    client.put_object(
        Bucket=bucket, Key="relayer/snapshots/20200101T000000Z-0badf00d/relayer.db.zst", Body=b"x"
    )
    client.create_multipart_upload(
        Bucket=bucket, Key="relayer/snapshots/20200102T000000Z-0badf00d/relayer.db.zst"
    )
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(f"s3://{bucket}/relayer", S3Options(addressing_style="path"), Deadline(60))
    later = datetime.now(UTC) + timedelta(hours=2)
    plan = catalog.prune(store, policy=retention.Policy(keep_last=2), apply=True, now=later)
    assert plan["delete"] == [ids[0]] and plan["leftovers"] == ["20200101T000000Z-0badf00d"]
    assert plan["aborted_uploads"] == ["relayer/snapshots/20200102T000000Z-0badf00d/relayer.db.zst"]
    assert sorted(m["id"] for m in manifests(s3_server, bucket)) == sorted(ids[1:])
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any("0badf00d" in k or ids[0] in k for k in keys)


def test_preflight_against_s3_leaves_no_probe_behind(s3_server, bucket, db) -> None:
    env = env_for(s3_server, bucket, s3_server.https_endpoint)
    run = run_cli("preflight", env={**env, "DATABASE_PATH": "/nonexistent/relayer.db"})
    assert run.rc == 0, run.stdout
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == []


def test_failed_multipart_upload_is_aborted_leaving_no_parts(s3_server, bucket, proxy, tmp_path) -> None:
    db = incompressible_db(tmp_path / "big.db", 6)
    proxy.add_rule("PUT", r"relayer\.db\.zst$", "error500", query_regex="partNumber=2", times=None)
    run = run_cli(
        "snapshot", "--db", str(db), env=env_for(s3_server, bucket, proxy.endpoint, S3_PART_SIZE_MB="5")
    )
    assert run.rc == 6 and "InternalError" in run.error
    assert proxy.count("DELETE", r"relayer\.db\.zst$", "uploadId") >= 1  # AbortMultipartUpload
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert manifests(s3_server, bucket) == []


def test_server_side_encryption_and_storage_class_are_sent(s3_server, bucket, db, tmp_path) -> None:
    env = env_for(s3_server, bucket, S3_SSE="AES256", S3_STORAGE_CLASS="STANDARD")
    run = run_cli("snapshot", "--db", str(db), env=env)
    assert run.rc == 0, run.stdout + run.stderr
    [manifest] = manifests(s3_server, bucket)
    head = s3_server.client().head_object(
        Bucket=bucket, Key=f"relayer/snapshots/{manifest['id']}/relayer.db.zst"
    )
    assert head.get("ServerSideEncryption") == "AES256"
    assert_intact(s3_server, bucket, manifest, tmp_path)


def test_an_aborted_upload_leaves_no_threads_and_no_parts(s3_server, bucket, tmp_path, monkeypatch) -> None:
    """A WAL database cannot be proved unchanged by its file: each snapshot of the same content is
    uploaded, then aborted. Over many (a supervisor's periodic snapshots), neither worker threads
    nor open multipart uploads may pile up."""
    import threading

    from job import log, snapshot
    from job.config import S3Options
    from job.deadline import Deadline
    from job.store import open_store

    db = tmp_path / "relayer.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE blobs (b BLOB)")
    conn.execute("INSERT INTO blobs SELECT randomblob(7 << 20)")  # more than one 5 MiB part
    conn.commit()
    conn.close()
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    log.configure(fmt="json", level="warning", command="test")
    store = open_store(
        f"s3://{bucket}/relayer", S3Options(addressing_style="path", part_size_mb=5), Deadline(60)
    )
    first = snapshot.create(db, store, reason="test", deadline=Deadline(60))
    threads = threading.active_count()
    for _ in range(4):
        again = snapshot.create(db, store, reason="test", deadline=Deadline(60))
        assert again["unchanged"] is True and again["snapshot_id"] == first["snapshot_id"]
    settled = time.monotonic() + 5  # the aborted uploads' workers end after their current part
    while threading.active_count() > threads and time.monotonic() < settled:
        time.sleep(0.05)
    assert threading.active_count() <= threads  # a leak would add two per aborted upload
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
