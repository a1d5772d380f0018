"""scripts/run-one-off-job.sh against a stand-in for Render's one-off job API (stdlib HTTP server)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run-one-off-job.sh"
SERVICE = "srv-test123"
JOB = "job-abc456"
KEY = "rnd_TESTKEY_a1b2c3d4e5f6g7h8i9j0"


@dataclass
class Api:
    """What the stand-in answers, and what it saw."""

    key: str = KEY
    polls: list[str] = field(default_factory=lambda: ["pending", "running", "succeeded"])
    create_status: int = 201
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    poll_count: int = 0


class Handler(BaseHTTPRequestHandler):
    api: Api

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.api.key}":
            self._send(401, {"id": "unauthorized", "message": "unauthorized"})
            return False
        return True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.api.requests.append(
            {"method": "POST", "path": self.path, "body": body, "content_type": self.headers["Content-Type"]}
        )
        if self.path != f"/v1/services/{SERVICE}/jobs":
            self.api.problems.append(f"POST to unexpected path {self.path}")
            self._send(404, {"message": "not found"})
            return
        if not self._authorized():
            return
        if not isinstance(body, dict) or not isinstance(body.get("startCommand"), str):
            self.api.problems.append(f"bad body {raw!r}")
            self._send(400, {"message": "bad request"})
            return
        if self.api.create_status != 201:
            self._send(self.api.create_status, {"message": "server trouble"})
            return
        self._send(201, {"id": JOB, "serviceId": SERVICE, "startCommand": body["startCommand"]})

    def do_GET(self) -> None:
        self.api.requests.append({"method": "GET", "path": self.path})
        if self.path != f"/v1/services/{SERVICE}/jobs/{JOB}":
            self.api.problems.append(f"GET of unexpected path {self.path}")
            self._send(404, {"message": "not found"})
            return
        if not self._authorized():
            return
        polls = self.api.polls
        status = polls[min(self.api.poll_count, len(polls) - 1)]
        self.api.poll_count += 1
        self._send(200, {"id": JOB, "serviceId": SERVICE, "status": status})


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    state = Api()
    handler = type("BoundHandler", (Handler,), {"api": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run(url: str, *command: str, service: str = SERVICE, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RENDER_")}
    base.update(RENDER_API_KEY=KEY, RENDER_API_URL=url, RENDER_POLL_INTERVAL="0.1", RENDER_JOB_TIMEOUT="30")
    base.update(env)
    return subprocess.run(
        [str(SCRIPT), service, *command],
        env={k: v for k, v in base.items() if v != "<unset>"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_script_is_executable_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


def test_succeeded_exits_zero(api: tuple[Api, str]) -> None:
    state, url = api
    proc = run(url, "relayer-job", "preflight")
    assert proc.returncode == 0, proc.stderr
    assert not state.problems
    post = state.requests[0]
    assert post["method"] == "POST"
    assert post["path"] == f"/v1/services/{SERVICE}/jobs"
    assert post["content_type"] == "application/json"
    assert post["body"] == {"startCommand": "relayer-job preflight"}
    assert state.poll_count >= 3  # pending, running, succeeded
    assert "running" in proc.stderr  # progress is shown
    assert proc.stdout.strip() == f"job {JOB} succeeded"


@pytest.mark.parametrize("final", ["failed", "canceled"])
def test_failed_or_canceled_exits_one(api: tuple[Api, str], final: str) -> None:
    state, url = api
    state.polls = ["running", final]
    proc = run(url, "relayer-job", "snapshots", "verify")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip() == f"job {JOB} {final}"
    assert JOB in proc.stderr


def test_missing_key_exits_two_with_clear_message(api: tuple[Api, str]) -> None:
    state, url = api
    proc = run(url, "relayer-job", "preflight", RENDER_API_KEY="<unset>")
    assert proc.returncode == 2
    assert "RENDER_API_KEY is not set" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no usage dump
    assert not state.requests  # nothing was sent

    empty = run(url, "relayer-job", "preflight", RENDER_API_KEY="")
    assert empty.returncode == 2
    assert "RENDER_API_KEY is not set" in empty.stderr


def test_key_never_printed_even_with_xtrace(api: tuple[Api, str]) -> None:
    state, url = api
    state.polls = ["running", "failed"]
    ok = run(url, "relayer-job", "preflight")
    traced = subprocess.run(
        ["bash", "-x", str(SCRIPT), SERVICE, "relayer-job", "preflight"],
        env={**os.environ, "RENDER_API_KEY": KEY, "RENDER_API_URL": url, "RENDER_POLL_INTERVAL": "0.1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    state.key = "some-other-key"  # now every request is a 401
    rejected = run(url, "relayer-job", "preflight")
    for proc in (ok, traced, rejected):
        assert KEY not in proc.stdout
        assert KEY not in proc.stderr
        assert KEY[4:16] not in proc.stdout + proc.stderr
    assert "+ curl" in traced.stderr  # xtrace really was on


def test_command_with_quotes_and_spaces_round_trips(api: tuple[Api, str]) -> None:
    state, url = api
    words = [
        "relayer-job",
        "snapshots",
        "verify",
        "--note",
        'it\'s "quoted" \\ $HOME `x`',
        "two  spaces",
        "é",
    ]
    proc = run(url, *words)
    assert proc.returncode == 0, proc.stderr
    assert state.requests[0]["body"] == {"startCommand": " ".join(words)}

    # One argument is taken verbatim: the caller controls the quoting.
    state.requests.clear()
    state.poll_count = 0
    verbatim = 'relayer-job snapshots verify --id \'snap 1\' --note "a \\"b\\""'
    proc = run(url, verbatim)
    assert proc.returncode == 0, proc.stderr
    assert state.requests[0]["body"] == {"startCommand": verbatim}


def test_unauthorized_is_reported_clearly(api: tuple[Api, str]) -> None:
    state, url = api
    state.key = "the-right-key"
    proc = run(url, "relayer-job", "preflight")
    assert proc.returncode == 3
    assert "HTTP 401" in proc.stderr
    assert "RENDER_API_KEY was rejected" in proc.stderr
    assert [r["method"] for r in state.requests] == ["POST"]  # no polling after a failed create


def test_server_error_on_create_is_not_retried(api: tuple[Api, str]) -> None:
    state, url = api
    state.create_status = 500
    proc = run(url, "relayer-job", "preflight")
    assert proc.returncode == 3
    assert "HTTP 500" in proc.stderr
    assert len(state.requests) == 1  # a retried POST could start the job twice


def test_unreachable_api_is_reported() -> None:
    proc = run("http://127.0.0.1:9/v1", "relayer-job", "preflight")
    assert proc.returncode == 3
    assert "could not reach" in proc.stderr


def test_timeout_has_its_own_exit_code(api: tuple[Api, str]) -> None:
    state, url = api
    state.polls = ["running"]
    proc = run(url, "relayer-job", "preflight", RENDER_JOB_TIMEOUT="1")
    assert proc.returncode == 124
    assert "timed out" in proc.stderr
    assert JOB in proc.stderr


@pytest.mark.parametrize("sub", ["deploy", "gate", "migrate", "restore", "snapshot", "status"])
def test_disk_commands_are_refused(api: tuple[Api, str], sub: str) -> None:
    state, url = api
    proc = run(url, "relayer-job", sub)
    assert proc.returncode == 2
    assert "render ssh" in proc.stderr
    assert not state.requests
    assert run(url, f"relayer-job {sub} --json").returncode == 2  # one-argument form too


def test_usage(api: tuple[Api, str]) -> None:
    _, url = api
    helped = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    for needle in ("WITHOUT the service's persistent disk", "render ssh", "preflight", "124"):
        assert needle in helped.stdout
    assert run(url, service=SERVICE).returncode == 2  # no COMMAND
    assert run(url, "relayer-job", "preflight", service="../x").returncode == 2
    assert run(url, "relayer-job", "preflight", RENDER_POLL_INTERVAL="soon").returncode == 2
