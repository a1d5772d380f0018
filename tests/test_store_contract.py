"""One contract, every backend: the file store and the S3 store (a real server) behave the same."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from job.config import S3Options
from job.deadline import Deadline
from job.errors import StoreError
from job.store import Store, open_store
from job.store.s3 import _composite_sha256

PAYLOAD = os.urandom(300_000)


@pytest.fixture(params=["file", "s3-http", "s3-https"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    if request.param == "file":
        yield open_store(f"file:{tmp_path / 'store'}", S3Options(), Deadline(60))
        return
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("bucket")
    endpoint = server.https_endpoint if request.param == "s3-https" else server.http_endpoint
    for key, value in server.env(endpoint).items():
        monkeypatch.setenv(key, value)
    yield open_store(
        f"s3://{bucket}/some/prefix", S3Options(addressing_style="path", part_size_mb=5), Deadline(60)
    )


def test_put_head_get_download_list_delete(store: Store, tmp_path: Path) -> None:
    import hashlib

    source = tmp_path / "data.bin"
    source.write_bytes(PAYLOAD)
    info = store.put_file("snapshots/a/relayer.db.zst", source, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert info.size == len(PAYLOAD)
    store.put_bytes("snapshots/a/manifest.json", b'{"x": 1}')
    head = store.head("snapshots/a/relayer.db.zst")
    assert head is not None and head.size == len(PAYLOAD) and head.modified.tzinfo is not None
    assert store.head("snapshots/missing") is None
    assert store.get_bytes("snapshots/a/manifest.json") == b'{"x": 1}'
    target = tmp_path / "back.bin"
    store.download("snapshots/a/relayer.db.zst", target)
    assert target.read_bytes() == PAYLOAD
    store.put_bytes("other/z", b"z")
    keys = sorted(o.key for o in store.list_objects("snapshots/"))
    assert keys == ["snapshots/a/manifest.json", "snapshots/a/relayer.db.zst"]
    store.delete(["snapshots/a/manifest.json"])
    assert store.head("snapshots/a/manifest.json") is None
    assert [o.key for o in store.list_objects("snapshots/")] == ["snapshots/a/relayer.db.zst"]
    assert store.abort_stale_uploads("snapshots/", datetime.now(UTC) - timedelta(hours=1)) == []


def test_missing_object_is_a_store_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        store.get_bytes("snapshots/none/manifest.json")
    with pytest.raises(StoreError):
        store.download("snapshots/none/relayer.db.zst", tmp_path / "x")


def test_overwriting_replaces_whole_objects(store: Store) -> None:
    store.put_bytes("k", b"first version, longer")
    store.put_bytes("k", b"second")
    assert store.get_bytes("k") == b"second"


def test_composite_checksum_matches_the_store(s3_server, bucket: str, tmp_path: Path, monkeypatch) -> None:
    """Our computation of S3's multipart checksum agrees with what the real server reports."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(f"s3://{bucket}", S3Options(addressing_style="path", part_size_mb=5), Deadline(60))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    import hashlib

    info = store.put_file("big", big, sha256=hashlib.sha256(big.read_bytes()).hexdigest())
    assert info.checksum_verified is True
    reported = s3_server.client().head_object(Bucket=bucket, Key="big", ChecksumMode="ENABLED")[
        "ChecksumSHA256"
    ]
    assert reported.split("-")[0] == _composite_sha256(big, 5 * 1024 * 1024).split("-")[0]


def test_a_streamed_upload_of_many_parts_arrives_byte_for_byte(store: Store, tmp_path: Path) -> None:
    """Written in uneven pieces that straddle part boundaries, over more parts than are ever in
    flight (the S3 store reuses its part buffers): the object is exactly the bytes written."""
    import hashlib

    data = os.urandom(23 * 1024 * 1024 + 12345)  # 5 parts of 5 MiB: 4 full, 1 partial
    upload = store.open_upload("snapshots/big/relayer.db.zst")
    at, step = 0, 1
    while at < len(data):
        upload.write(data[at : at + step])
        at, step = at + step, step * 3 % 3_000_001 + 1
    info = upload.commit(sha256=hashlib.sha256(data).hexdigest())
    assert info.size == len(data)
    target = tmp_path / "back.bin"
    store.download("snapshots/big/relayer.db.zst", target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
