"""Configuration precedence and invalid values (exit 2, one line naming the flag or variable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.config import load
from job.errors import UsageError
from tests.conftest import base_env


def test_flags_override_env_which_overrides_defaults(tmp_path: Path) -> None:
    env = {"DATABASE_PATH": "/env/relayer.db", "JOB_LOCK_TIMEOUT": "7", "LOG_FORMAT": "console"}
    config = load({"db": str(tmp_path / "flag.db"), "lock_timeout": None}, env)
    assert config.db_path == tmp_path / "flag.db"
    assert config.lock_timeout == 7.0 and config.log_format == "console"
    assert config.lock_file == tmp_path / ".relayer-job.lock"
    defaults = load({}, {})
    assert defaults.db_path == Path("./data/relayer.db") and defaults.lock_timeout == 120
    assert defaults.log_level == "info" and defaults.deadline == 600
    assert defaults.store_url == "file:./snapshots"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        # The relayer removes every leading "sqlite:" and nothing else (Rust trim_start_matches).
        ("sqlite:./data/relayer.db", "data/relayer.db"),
        ("sqlite:data/relayer.db", "data/relayer.db"),
        ("sqlite://data/relayer.db", "/data/relayer.db"),  # "//data/..." is absolute
        ("sqlite:///data/relayer.db", "/data/relayer.db"),
        ("sqlite:sqlite:/data/relayer.db", "/data/relayer.db"),
        ("/plain/path.db", "/plain/path.db"),
        # Not a URI for rusqlite: the "?" is part of the file name it creates.
        ("sqlite:data/x.db?mode=rwc", "data/x.db?mode=rwc"),
        # SQLite URIs (rusqlite opens with URI filenames on).
        ("sqlite:file:data/relayer.db?mode=rwc", "data/relayer.db"),
        ("file:///data/relay%20er.db?cache=shared", "/data/relay er.db"),
        ("file://localhost/data/relayer.db", "/data/relayer.db"),
        ("file:/data/relayer.db#frag", "/data/relayer.db"),
    ],
)
def test_database_url_like_the_relayer(url: str, path: str) -> None:
    assert str(load({}, {"DATABASE_URL": url}).db_path) == path


def test_database_path_file_uri_like_the_relayer() -> None:
    assert str(load({}, {"DATABASE_PATH": "file:/data/relayer.db?mode=rw"}).db_path) == "/data/relayer.db"
    assert str(load({"db": "file:rel/x.db"}, {}).db_path) == "rel/x.db"
    # DATABASE_PATH wins over DATABASE_URL, as in the relayer.
    both = {"DATABASE_PATH": "/a/relayer.db", "DATABASE_URL": "postgres://u:p@h/db"}
    assert str(load({}, both).db_path) == "/a/relayer.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DATABASE_URL": "postgres://user:hunter2@db.example/relayer"},
            "DATABASE_URL: the 'postgres' scheme",
        ),
        ({"DATABASE_URL": "mysql://h/db"}, "DATABASE_URL: the 'mysql' scheme"),
        ({"DATABASE_URL": "sqlite::memory:"}, "DATABASE_URL: ':memory:' is not a database file"),
        ({"DATABASE_URL": "sqlite:file::memory:?cache=shared"}, "DATABASE_URL: the SQLite URI names no"),
        ({"DATABASE_URL": "sqlite:file:/d/x.db?mode=ro"}, "DATABASE_URL: the SQLite URI option mode=ro"),
        ({"DATABASE_PATH": "file:x.db?mode=memory"}, "DATABASE_PATH: the SQLite URI option mode=memory"),
        ({"DATABASE_PATH": "file:/d/x.db?immutable=1"}, "DATABASE_PATH: the SQLite URI option immutable=1"),
        ({"DATABASE_PATH": "file:/d/x.db?vfs=unix-none"}, "DATABASE_PATH: the SQLite URI option vfs"),
        ({"DATABASE_PATH": "file://otherhost/d/x.db"}, "DATABASE_PATH: the SQLite URI names a host"),
        ({"DATABASE_URL": "file:/d/relayer.db%00junk"}, "DATABASE_URL: the SQLite URI's path contains %00"),
        ({"DATABASE_URL": "file:/d/relayer.db?mode=RW"}, "DATABASE_URL: the SQLite URI option mode=RW"),
        (
            {"DATABASE_URL": "sqlite://admin:hunter2@db.example:5432/relayer.db"},
            "DATABASE_URL: looks like a server address with credentials",
        ),
        ({"DATABASE_PATH": ""}, "DATABASE_PATH is set but empty"),
        ({"DATABASE_PATH": " ", "DATABASE_URL": "sqlite:/d/x.db"}, "DATABASE_PATH is set but empty"),
        ({"DATABASE_URL": ""}, "DATABASE_URL is set but empty"),
        ({"SCHEMA_ACCEPT_REASON": "why"}, "SCHEMA_ACCEPT_REASON and SCHEMA_ACCEPT_FINGERPRINT go together"),
    ],
)
def test_database_locations_the_relayer_would_not_share_are_refused(env, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load({}, env)
    assert caught.value.message.startswith(message)
    assert "hunter2" not in caught.value.message


def test_postgres_database_url_is_exit_2_through_the_cli(cli) -> None:
    run = cli("status", env=base_env(DATABASE_URL="postgres://user:hunter2@db.example/relayer"))
    assert run.rc == 2 and run.error.startswith("DATABASE_URL: the 'postgres' scheme")
    assert "hunter2" not in run.stdout + run.stderr


def test_file_uri_opens_the_file_the_relayer_opens(cli, tmp_path: Path) -> None:
    """Not "missing" while SQLite would open an existing file: the job resolves the URI itself."""
    target = tmp_path / "my data" / "relayer.db"
    target.parent.mkdir()
    assert cli("migrate", "--db", str(target)).rc == 0
    uri = "sqlite:file:" + str(target).replace(" ", "%20") + "?mode=rwc"
    run = cli("status", "--json", env=base_env(DATABASE_URL=uri))
    assert run.rc == 0, run.stdout + run.stderr
    assert '"exists": true' in run.stdout and '"schema_version": 4' in run.stdout


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"lock_timeout": "soon"}, {}, "--lock-timeout: expected a number of seconds, got 'soon'"),
        ({}, {"JOB_LOCK_TIMEOUT": "-1"}, "JOB_LOCK_TIMEOUT: expected a positive number"),
        ({}, {"JOB_DEADLINE": "nan"}, "JOB_DEADLINE: expected a positive number"),
        ({"log_format": "xml"}, {}, "--log-format: expected one of json, console, got 'xml'"),
        ({}, {"LOG_LEVEL": "loud"}, "LOG_LEVEL: expected one of debug, info, warning, error"),
        ({}, {"S3_CHECKSUM_MODE": "never"}, "S3_CHECKSUM_MODE: expected one of"),
        ({"db": "/tmp/x.db", "lock_file": "/tmp/x.db-journal"}, {}, "the lock must be a separate file"),
        ({"s3_sse_kms_key_id": "k"}, {}, "needs --s3-sse aws:kms"),
    ],
)
def test_invalid_values_name_their_source(flags, env, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load(flags, env)
    assert message in caught.value.message


def test_database_path_that_is_a_directory(cli, tmp_path: Path) -> None:
    run = cli("migrate", "--db", str(tmp_path))
    assert run.rc == 2 and "is a directory" in run.error and "--db" in run.error
    run = cli("status", env=base_env(DATABASE_PATH=str(tmp_path)))
    assert run.rc == 2 and "DATABASE_PATH" in run.error


def test_cli_usage_errors_exit_2_with_one_line(cli) -> None:
    run = cli("migrate", "--lock-timeout", "abc")
    assert run.rc == 2 and run.error == "--lock-timeout: expected a number of seconds, got 'abc'"
    unknown = cli("frobnicate")
    assert unknown.rc == 2 and "invalid choice: 'frobnicate'" in unknown.error
    env_bad = cli("status", env=base_env(LOG_FORMAT="yaml"))
    assert env_bad.rc == 2 and "LOG_FORMAT" in env_bad.error


def test_python_dash_m_and_help(cli) -> None:
    run = cli("--help")
    assert run.rc == 0 and "migrate" in run.stdout and "Exit codes" in run.stdout
