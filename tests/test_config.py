"""Configuration precedence and invalid values (exit 2, one line naming the flag or variable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.config import db_path_from_url, load
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
        ("sqlite:./data/relayer.db", "./data/relayer.db"),
        ("sqlite:///data/relayer.db", "/data/relayer.db"),
        ("sqlite://data.db?mode=rwc", "data.db"),
        ("/plain/path.db", "/plain/path.db"),
    ],
)
def test_database_url_like_the_relayer(url: str, path: str) -> None:
    assert db_path_from_url(url) == path
    assert str(load({}, {"DATABASE_URL": url}).db_path) == str(Path(path))


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
