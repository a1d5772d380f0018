"""Structured logs: required keys on every event, one job.finished, secrets never printed."""

from __future__ import annotations

import io
import json
import re

import pytest
import structlog

from job import log
from tests.conftest import base_env

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def capture(monkeypatch: pytest.MonkeyPatch, **event: object) -> str:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    stream = io.StringIO()
    log.configure(fmt="json", level="info", command="test", stream=stream)
    structlog.get_logger().info("thing.happened", **event)
    return stream.getvalue()


@pytest.mark.parametrize(
    ("event", "leak"),
    [
        ({"aws_secret_access_key": "abc123def"}, "abc123def"),
        ({"session_token": "tok-1234567"}, "tok-1234567"),
        ({"headers": {"Authorization": "AWS4-HMAC-SHA256 Credential=x, Signature=deadbeef"}}, "deadbeef"),
        ({"url": "https://user:hunter22@example.invalid/x"}, "hunter22"),
        ({"detail": f"botocore said {SECRET} was wrong"}, SECRET),
        ({"nested": [{"note": f"s3://bucket?k={SECRET}"}]}, SECRET),
        ({"message": "render key rnd_AbCdEfGhIjKlMnOpQrSt1234 used"}, "rnd_AbCdEfGhIjKlMnOpQrSt1234"),
        ({"error": "curl -H 'Authorization: Bearer sk_live_abcdefgh'"}, "sk_live_abcdefgh"),
    ],
)
def test_secrets_are_redacted_wherever_they_appear(monkeypatch, event, leak: str) -> None:
    out = capture(monkeypatch, **event)
    assert leak not in out and log.REDACTED in out


def test_tracebacks_are_redacted_too(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    stream = io.StringIO()
    log.configure(fmt="json", level="info", command="test", stream=stream)
    try:
        raise RuntimeError(f"signing failed with {SECRET}")
    except RuntimeError:
        structlog.get_logger().error("thing.failed", exc_info=True)
    out = stream.getvalue()
    assert "signing failed with" in out and SECRET not in out


def test_every_event_has_the_required_keys_and_one_run_id(cli, tmp_path) -> None:
    run = cli("migrate", "--db", str(tmp_path / "r.db"))
    assert run.rc == 0
    events = run.events
    assert len(events) >= 4
    for event in events:
        assert {"event", "level", "timestamp", "run_id", "command"} <= event.keys(), event
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", event["timestamp"])
        assert event["command"] == "migrate"
    assert len({e["run_id"] for e in events}) == 1
    assert [e["event"] for e in events].count("job.finished") == 1
    assert events[-1]["event"] == "job.finished" and events[-1]["duration_s"] >= 0


def test_failures_carry_error_code_and_no_traceback_at_info(cli, tmp_path) -> None:
    bogus = tmp_path / "r.db"
    bogus.write_bytes(b"x" * 4096)
    run = cli("migrate", "--db", str(bogus))
    assert run.rc == 5
    assert run.finished["error_code"] == "database_problem" and run.finished["outcome"] == "failed"
    assert "\n" not in run.finished["error"]
    assert "Traceback" not in run.stdout + run.stderr
    debug = cli("migrate", "--db", str(bogus), "--log-level", "debug")
    assert "Traceback" in debug.stdout


def test_secret_in_a_bad_value_never_reaches_the_output(cli) -> None:
    run = cli("migrate", "--lock-timeout", SECRET, env=base_env(AWS_SECRET_ACCESS_KEY=SECRET))
    assert run.rc == 2 and "--lock-timeout" in run.error
    assert SECRET not in run.stdout + run.stderr


def test_status_json_is_the_only_thing_on_stdout(cli, tmp_path) -> None:
    assert cli("migrate", "--db", str(tmp_path / "r.db")).rc == 0
    run = cli("status", "--db", str(tmp_path / "r.db"), "--json")
    assert json.loads(run.stdout)["schema_version"] == 4
    assert '"job.finished"' in run.stderr


def test_progress_events_are_throttled(monkeypatch) -> None:
    from job.progress import Progress

    stream = io.StringIO()
    log.configure(fmt="json", level="info", command="test", stream=stream)
    clock = iter([0.0, 1.0, 6.0, 7.0, 12.5])
    monkeypatch.setattr("job.progress.time.monotonic", lambda: next(clock))
    progress = Progress("snapshot.copy_progress", total=1000)  # starts at t=0
    for done in (100, 600, 700, 1000):  # t = 1, 6, 7, 12.5
        progress(done)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["bytes_done"] for e in events] == [600, 1000]
    assert events[0]["percent"] == 60.0 and events[0]["bytes_total"] == 1000
