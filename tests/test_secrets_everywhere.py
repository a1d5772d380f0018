"""Secrets planted everywhere an operator may put one never come out of the job: not in logs,
not in the reports printed on stdout, not in usage errors, on success and on failure paths.

The secrets sit in secret-named variables, in the user:password@ of AWS_ENDPOINT_URL(_S3) and of
DATABASE_URL, and in the query string of SNAPSHOT_STORE (and of --store on the command line).
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Run, base_env, run_cli
from tests.support.legacy import build_legacy_001

NAMED = {
    "JWT_SECRET": "jwt-planted-0a1b2c3d",
    "EXECUTOR_API_KEY": "exec-planted-4e5f6a7b",
    "PASSWORD_SALT": "salt-planted-8c9d0e1f",
    "RENDER_API_KEY": "rnd_PlantedRenderKey2a3b4c5d",
    "GITHUB_TOKEN": "ghp_planted6e7f8a9b",
}
ENDPOINT_PASSWORD = "ep-pass-planted-1c2d"
DB_PASSWORD = "db-pass-planted-3e4f"
QUERY = {
    "token": "qtoken-planted-5a6b",
    "X-Amz-Signature": "0badc0ffee0ddf00d5ab",
    "X-Amz-Credential": "AKIAPLANTED7C8D/20260101/us-east-1/s3/aws4_request",
    "sig": "sas-sig-planted-9e0f",
    "password": "qpass-planted-1a2b",
}
STORE_QUERY = "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in QUERY.items())
WRONG_SECRET = "wrong-secret-planted-3c4d5e6f"
SESSION_TOKEN = "session-token-planted-7a8b9c0d"


def planted(extra: tuple[str, ...] = ()) -> list[str]:
    return [*NAMED.values(), ENDPOINT_PASSWORD, DB_PASSWORD, *QUERY.values(), *extra]


def assert_no_secret(run: Run, secrets: list[str], what: str) -> None:
    out = run.stdout + run.stderr
    assert out.strip(), f"{what}: no output at all"
    for secret in secrets:
        for spelling in {secret, quote(secret, safe="")}:
            assert spelling not in out, f"{what} printed a planted secret ({spelling}):\n{out}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def relayer_db(tmp_path: Path) -> Path:
    db = tmp_path / "data" / "relayer.db"
    db.parent.mkdir()
    build_legacy_001(db, commands=5)
    return db


def s3_env(server, bucket: str, db: Path, **extra: str) -> dict[str, str]:
    """The real server's credentials, with secrets planted around them."""
    endpoint = server.http_endpoint.replace("http://", f"http://ops:{ENDPOINT_PASSWORD}@")
    env = {
        **server.env(),
        **NAMED,
        "AWS_ENDPOINT_URL": endpoint,
        "DATABASE_PATH": str(db),
        "DATABASE_URL": f"sqlite://dbuser:{DB_PASSWORD}@/elsewhere/relayer.db",
        "SNAPSHOT_STORE": f"s3://{bucket}/relayer{STORE_QUERY}",
        "JOB_DEADLINE": "20",
    }
    return base_env(**{**env, **extra})


COMMANDS = [
    ("migrate", "--dry-run"),
    ("deploy",),
    ("snapshot", "--force", "--reason", "manual"),
    ("snapshots", "list"),
    ("snapshots", "list", "--json"),
    ("snapshots", "verify", "latest", "--download"),
    ("snapshots", "prune", "--keep-last", "5"),
    ("preflight",),
    ("status",),
    ("status", "--json"),
    ("restore", "latest", "--force"),
    ("migrate",),
    ("gate", "--", "true"),
]


def test_every_command_keeps_planted_secrets_out_of_its_output(s3_server, bucket, relayer_db) -> None:
    env = s3_env(s3_server, bucket, relayer_db)
    secrets = planted((s3_server.secret_key,))
    for command in COMMANDS:
        run = run_cli(*command, env=env)
        assert run.rc == 0, f"{command}: {run.stdout}{run.stderr}"
        assert_no_secret(run, secrets, " ".join(command))
    # The same again in console format, where values are not JSON-escaped.
    for command in (("status",), ("snapshots", "list")):
        run = run_cli(*command, env={**env, "LOG_FORMAT": "console"})
        assert run.rc == 0
        assert_no_secret(run, secrets, f"{' '.join(command)} (console)")


def test_bad_credentials_on_the_real_server(s3_server, bucket, relayer_db) -> None:
    env = s3_env(
        s3_server,
        bucket,
        relayer_db,
        AWS_SECRET_ACCESS_KEY=WRONG_SECRET,
        AWS_SESSION_TOKEN=SESSION_TOKEN,
        LOG_LEVEL="debug",  # tracebacks too
    )
    for command in (("snapshots", "list"), ("status", "--json"), ("snapshot",)):
        run = run_cli(*command, env=env)
        assert run.rc == 6, f"{command}: {run.stdout}{run.stderr}"
        assert_no_secret(run, planted((WRONG_SECRET, SESSION_TOKEN)), " ".join(command))


def test_unreachable_store_with_a_password_in_the_endpoint(relayer_db) -> None:
    endpoint = f"http://ops:{ENDPOINT_PASSWORD}@127.0.0.1:{closed_port()}"
    env = base_env(
        **NAMED,
        AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
        AWS_SECRET_ACCESS_KEY=WRONG_SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
        DATABASE_PATH=str(relayer_db),
        SNAPSHOT_STORE=f"s3://bucket/relayer{STORE_QUERY}",
        JOB_DEADLINE="1.5",
        LOG_LEVEL="debug",
    )
    for command in (("status", "--json"), ("snapshots", "list"), ("snapshot",)):
        run = run_cli(*command, env=env)
        assert run.rc in (6, 9), f"{command}: {run.stdout}{run.stderr}"
        assert_no_secret(run, planted((WRONG_SECRET,)), " ".join(command))


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        pytest.param(
            ("status", "--json", "--store", f"s3://b/p{STORE_QUERY}", "--no-such-flag"),
            {},
            2,
            id="bad-flag",
        ),
        pytest.param(("status",), {"LOG_LEVEL": "loud"}, 2, id="bad-config"),
        pytest.param(
            ("status", "--json"),
            {"SNAPSHOT_STORE": f"ftp://ops:{ENDPOINT_PASSWORD}@host/x{STORE_QUERY}"},
            2,
            id="bad-store-url",
        ),
        pytest.param(
            ("snapshot",),
            {"SNAPSHOT_STORE": f"s3://ops:{ENDPOINT_PASSWORD}@bucket/x{STORE_QUERY}"},
            2,
            id="credentials-in-store-url",
        ),
        pytest.param(
            ("snapshots", "list", "--store", f"wat://x{STORE_QUERY}"),
            {},
            2,
            id="bad-store-flag",
        ),
        # An empty DATABASE_PATH is refused (the relayer would open a temporary database), and so
        # is a DATABASE_URL carrying credentials: either way exit 2 without echoing them.
        pytest.param(("status",), {"DATABASE_PATH": ""}, 2, id="empty-database-path"),
        pytest.param(
            ("snapshot",), {"DATABASE_PATH": "x", "DATABASE_URL": ""}, 5, id="snapshot-missing-database"
        ),
    ],
)
def test_failure_paths_keep_planted_secrets_out(tmp_path: Path, args, env, code: int) -> None:
    base = {
        **NAMED,
        "AWS_ENDPOINT_URL": f"http://ops:{ENDPOINT_PASSWORD}@127.0.0.1:9",
        "DATABASE_PATH": str(tmp_path / "missing.db"),
        "DATABASE_URL": f"sqlite://dbuser:{DB_PASSWORD}@{tmp_path}/missing/relayer.db",
        "SNAPSHOT_STORE": f"file:{tmp_path / 'store'}{STORE_QUERY}",
    }
    run = run_cli(*args, env=base_env(**{**base, **env}), cwd=tmp_path)
    assert run.rc == code, run.stdout + run.stderr
    assert_no_secret(run, planted(), " ".join(args))


def test_a_crash_before_logging_is_set_up_is_redacted_too(monkeypatch, capsys) -> None:
    """A bug anywhere (here: in loading the configuration) prints its traceback redacted."""
    from job import config
    from job.cli import main

    def broken(*_: object) -> None:
        raise RuntimeError(f"could not parse http://ops:{ENDPOINT_PASSWORD}@host{STORE_QUERY}")

    monkeypatch.setattr(config, "load", broken)
    monkeypatch.setenv("JWT_SECRET", NAMED["JWT_SECRET"])
    assert main.main(["status", "--store", f"file:/x{STORE_QUERY}"]) == 1
    out = capsys.readouterr()
    assert "RuntimeError: could not parse http://ops:***@host" in out.err
    for secret in planted():
        assert secret not in out.out + out.err
