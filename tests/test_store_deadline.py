"""The deadline holds for every store operation, transfers in progress included, against the real
S3 server behind a proxy that stalls; and every exception the S3 libraries can raise has a
documented exit code."""

from __future__ import annotations

import inspect
import string
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3.exceptions
import botocore.exceptions
import pytest
import s3transfer.exceptions
import urllib3.exceptions

from job.config import S3Options
from job.deadline import Deadline
from job.errors import DeadlineExceeded, JobError, StoreError
from job.store import Store, open_store
from tests.conftest import run_cli
from tests.support.dbtools import incompressible_db
from tests.support.legacy import build_legacy_001
from tests.test_s3_snapshots import env_for, manifests

DEADLINE_S = 4
# The job must end within the deadline plus a few seconds; without a hard deadline it runs for a
# minute or more (botocore's 3 attempts x 20 s read timeout, s3transfer's 5 download attempts).
# This is the bound the subprocess gets, with room for start-up on a busy machine.
HARD_LIMIT_S = DEADLINE_S + 20
STALL_S = 45


def stopped_by_the_deadline(*args: str, env: dict[str, str]) -> None:
    run = run_cli(*args, env={**env, "JOB_DEADLINE": str(DEADLINE_S)}, timeout=HARD_LIMIT_S)
    assert run.rc == 9, run.stdout + run.stderr
    assert run.finished["error_code"] == "deadline_exceeded" and "JOB_DEADLINE" in run.error


def test_a_store_that_never_answers_stops_the_job_at_the_deadline(
    s3_server, bucket, proxy, tmp_path: Path
) -> None:
    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=20)
    proxy.add_rule(None, r".*", "stall", times=None, stall_seconds=STALL_S)
    stopped_by_the_deadline("snapshot", "--db", str(db), env=env_for(s3_server, bucket, proxy.endpoint))


@pytest.mark.parametrize(
    ("action", "pause_s"), [("stall_response_body", STALL_S), ("trickle_response_body", 0.2)]
)
def test_a_download_stalled_or_trickling_mid_body_stops_at_the_deadline(
    s3_server, bucket, proxy, tmp_path: Path, action: str, pause_s: float
) -> None:
    """A stall ends in a read timeout, which must be no longer than the time left; a trickle never
    times out, so only abandoning the transfer at the deadline ends it."""
    db = incompressible_db(tmp_path / "relayer.db", 1)
    assert run_cli("snapshot", "--db", str(db), env=env_for(s3_server, bucket)).rc == 0
    rule = proxy.add_rule("GET", r"relayer\.db\.zst$", action, times=None, stall_seconds=pause_s)
    restored = tmp_path / "restored" / "relayer.db"
    stopped_by_the_deadline(
        "restore", "latest", "--db", str(restored), env=env_for(s3_server, bucket, proxy.endpoint)
    )
    assert rule.fired >= 1
    assert not restored.exists()


@pytest.mark.parametrize("part_size_mb", [None, "5"], ids=["single-put", "multipart"])
def test_an_upload_stalled_mid_body_stops_at_the_deadline_uncommitted(
    s3_server, bucket, proxy, tmp_path: Path, part_size_mb: str | None
) -> None:
    db = incompressible_db(tmp_path / "relayer.db", 6)
    extra = {"S3_PART_SIZE_MB": part_size_mb} if part_size_mb else {}
    rule = proxy.add_rule(
        "PUT", r"relayer\.db\.zst$", "stall_request_body", times=None, stall_seconds=STALL_S
    )
    env = env_for(s3_server, bucket, proxy.endpoint, **extra)
    stopped_by_the_deadline("snapshot", "--db", str(db), env=env)
    assert rule.fired >= 1
    assert manifests(s3_server, bucket) == []
    if part_size_mb:  # the multipart upload was aborted, deadline or not: no parts left to bill
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _library_exceptions() -> list[type[BaseException]]:
    modules: list[ModuleType] = [
        botocore.exceptions,
        boto3.exceptions,
        s3transfer.exceptions,
        urllib3.exceptions,
    ]
    found = {
        obj
        for module in modules
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Exception)
        and not issubclass(obj, Warning)
        and obj.__module__.split(".")[0] == module.__name__.split(".")[0]
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance built the way the library builds it, as far as its constructor allows."""
    if issubclass(cls, botocore.exceptions.ClientError):
        return cls({"Error": {"Code": "Weird", "Message": "m"}, "ResponseMetadata": {}}, "GetObject")
    fmt = getattr(cls, "fmt", "")
    fields = {name for _, name, _, _ in string.Formatter().parse(fmt) if name}
    attempts = [{"kwargs": dict.fromkeys(fields, "x")}]
    attempts += [{"args": (value,) * n} for n in range(4) for value in ("x", 1)]
    response = SimpleNamespace(tell=lambda: 7, length_remaining=3)  # what urllib3 reads of one
    attempts += [{"args": (response, b"zz")}]
    for attempt in attempts:
        try:
            instance = cls(*attempt.get("args", ()), **attempt.get("kwargs", {}))
            str(instance)  # some constructors accept arguments their message cannot format
        except Exception:
            continue
        return instance
    raise AssertionError(f"cannot build {cls}")


@pytest.fixture(scope="module")
def s3_store(s3_server) -> Store:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.env().items():
            patch.setenv(key, value)
        return open_store("s3://some-bucket/prefix", S3Options(addressing_style="path"), Deadline(60))


@pytest.mark.parametrize("exc_type", _library_exceptions(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_s3_library_exception_has_a_documented_exit_code(
    s3_store: Store, exc_type: type[BaseException]
) -> None:
    error = _instance(exc_type)
    s3_store.deadline = Deadline(0.5)  # type: ignore[attr-defined]  # no long backoff for transient ones

    def fail() -> None:
        raise error

    with pytest.raises(JobError) as caught:
        s3_store._call("get", "snapshots/x/manifest.json", fail)  # type: ignore[attr-defined]
    assert type(caught.value) in (StoreError, DeadlineExceeded)


def test_the_file_store_stops_copying_at_the_deadline(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"\0" * (3 << 20))
    store = open_store(f"file:{tmp_path / 'store'}", S3Options(), Deadline(60))
    store.put_file("snapshots/a/relayer.db.zst", source, sha256="0" * 64)
    spent = Deadline(1, started=time.monotonic() - 5)
    late = open_store(f"file:{tmp_path / 'store'}", S3Options(), spent)
    with pytest.raises(DeadlineExceeded):
        late.download("snapshots/a/relayer.db.zst", tmp_path / "copy.bin")
    with pytest.raises(DeadlineExceeded):
        late.put_file("snapshots/b/relayer.db.zst", source, sha256="0" * 64)
    assert late.head("snapshots/b/relayer.db.zst") is None


def test_no_request_waits_longer_than_the_time_left(s3_server, bucket, monkeypatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(f"s3://{bucket}/p", S3Options(addressing_style="path"), Deadline(8))
    timeouts: list[float] = []

    def record(request: Any, **_: Any) -> None:
        timeouts.append(request.context["read_timeout"])

    store.client.meta.events.register("before-send.s3", record)  # type: ignore[attr-defined]
    assert store.head("snapshots/none/manifest.json") is None
    assert timeouts and all(0 < t <= 8 for t in timeouts)
    store.deadline = Deadline(1, started=time.monotonic() - 2)  # type: ignore[attr-defined]
    with pytest.raises(DeadlineExceeded):
        store.head("snapshots/none/manifest.json")
    assert len(timeouts) == 1  # no request was sent after the deadline
