"""Configuration: flags override environment variables, which override defaults.

The environment variable names are part of the interface: DATABASE_PATH, DATABASE_URL and
MIGRATIONS_DIR are the ones the relayer itself reads, so one Render env group serves both.
Every invalid value is a UsageError (exit 2) naming the flag or variable it came from.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from job import dburl
from job.errors import UsageError
from job.manifest import parse_choice
from job.retention import Policy as RetentionPolicy
from job.retention import parse as parse_retention

T = TypeVar("T")

DEFAULT_DB = "./data/relayer.db"
DEFAULT_STORE = "file:./snapshots"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
CHECKSUM_MODES = ("when_supported", "when_required")
ADDRESSING_STYLES = ("auto", "path", "virtual")
SSE_MODES = ("AES256", "aws:kms")


@dataclass(frozen=True)
class S3Options:
    addressing_style: str = "auto"
    checksum_mode: str = "when_supported"
    sse: str | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    part_size_mb: int = 8


@dataclass(frozen=True)
class Config:
    db_path: Path
    migrations_dir: Path
    lock_file: Path
    lock_timeout: float
    log_format: str
    log_level: str
    deadline: float
    store_url: str
    s3: S3Options = field(default_factory=S3Options)
    disk_mount_path: Path | None = None
    allow_network_fs: bool = False
    allow_new_database: bool = False
    restore_snapshot: str | None = None
    keep_replaced: int = 1  # RESTORE_KEEP_REPLACED: how many databases replaced by restores stay on the disk
    allow_drift: bool = False
    schema_accept_reason: str | None = None
    schema_accept_fingerprint: str | None = None
    run_as: str | None = None  # JOB_USER: the account to run as when started as root (job.privileges)
    snapshot_interval: float = 900.0  # gate --supervise: seconds between periodic snapshots, 0 = off
    shutdown_snapshot_budget: float = 20.0  # gate --supervise: seconds after a stop, 0 = no snapshot
    retention: RetentionPolicy | None = None  # SNAPSHOT_RETENTION, applied after each new snapshot


def _pick(flags: Mapping[str, Any], env: Mapping[str, str], flag: str, var: str) -> tuple[Any, str] | None:
    """The raw value and a label naming where it came from, or None when unset."""
    value = flags.get(flag.lstrip("-").replace("-", "_"))
    if value is not None:
        return value, flag
    if env.get(var, "") != "":
        return env[var], var
    return None


def _parse(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    flag: str,
    var: str,
    default: T,
    convert: Callable[[Any, str], T],
) -> T:
    picked = _pick(flags, env, flag, var)
    if picked is None:
        return default
    raw, source = picked
    return convert(raw, source)


def _seconds(raw: Any, source: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: expected a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{source}: expected a positive number of seconds, got {raw!r}")
    return value


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(s|m|h)?$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600}
MAX_DURATION = 7 * 24 * 3600


def _duration(raw: Any, source: str) -> float:
    """`30s`, `15m`, `1h` (a bare number is seconds); 0 turns the thing off."""
    match = _DURATION.match(str(raw).strip().lower())
    value = float(match[1]) * _UNIT_SECONDS[match[2]] if match else None
    if value is None or (value != 0 and not 1 <= value <= MAX_DURATION):
        raise UsageError(
            f"{source}: expected a duration such as 30s, 15m or 1h (from 1s to 168h), or 0 for off; "
            f"got {raw!r}"
        )
    return value


def _part_size(raw: Any, source: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: expected a whole number of MiB, got {raw!r}") from None
    if not 5 <= value <= 5120:
        raise UsageError(f"{source}: S3 parts must be 5 to 5120 MiB, got {raw!r}")
    return value


def _count(raw: Any, source: str) -> int:
    value = str(raw).strip()
    if not value.isdecimal() or not value.isascii():
        raise UsageError(f"{source}: expected a whole number >= 0, got {raw!r}")
    return int(value)


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def convert(raw: Any, source: str) -> str:
        value = str(raw).strip()
        match = next((c for c in choices if c.lower() == value.lower()), None)
        if match is None:
            raise UsageError(f"{source}: expected one of {', '.join(choices)}, got {raw!r}")
        return match

    return convert


def _text(raw: Any, _: str) -> str:
    return str(raw).strip()


def _flag(raw: Any, source: str) -> bool:
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise UsageError(f"{source}: expected 1/true/yes or 0/false/no, got {raw!r}")


def _path(raw: Any, _: str) -> Path:
    return Path(str(raw)).expanduser()


def _db_path(flags: Mapping[str, Any], env: Mapping[str, str]) -> Path:
    read_by_relayer = next((v for v in ("DATABASE_PATH", "DATABASE_URL") if v in env), None)
    if flags.get("db") is None and read_by_relayer and not env[read_by_relayer].strip():
        # The relayer takes a set variable as it is, and "" makes SQLite open a temporary database.
        raise UsageError(f"{read_by_relayer} is set but empty; set it to the database file or unset it")
    picked = _pick(flags, env, "--db", "DATABASE_PATH")
    if picked is not None:
        path = dburl.from_name(str(picked[0]), picked[1])
        source = picked[1]
    elif env.get("DATABASE_URL", ""):
        path, source = dburl.from_url(env["DATABASE_URL"]), "DATABASE_URL"
    else:
        path, source = Path(DEFAULT_DB), "default"
    if path.is_dir():
        raise UsageError(f"{source}: {str(path)!r} is a directory; give the path of the database file")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """The same file, whatever the path: `..`, symlinks and hard links resolved."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist (yet)
        return False


def _refuse_lock_on_database(lock_file: Path, db_path: Path) -> None:
    """Taking the lock writes who holds it into the lock file: a lock file that is the database
    or one of its journal files, by whatever path, would destroy it. SQLite names the journal
    files after the database's real path, so both spellings are checked."""
    for db in (db_path, Path(os.path.realpath(db_path))):
        for suffix in ("", "-journal", "-wal", "-shm"):
            if _same_file(lock_file, db.with_name(db.name + suffix)):
                raise UsageError(
                    f"--lock-file / JOB_LOCK_FILE: {lock_file} is the database or one of its journal "
                    f"files ({db.name + suffix}); the lock must be a separate file"
                )


def default_migrations_dir() -> Path:
    """The repository's migrations/ when running from a checkout, else ./migrations."""
    beside_package = Path(__file__).resolve().parent.parent / "migrations"
    return beside_package if beside_package.is_dir() else Path("migrations")


def _default_log_format() -> str:
    return "console" if sys.stdout.isatty() else "json"


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Resolve the whole configuration from parsed flags (None = not given) and the environment."""
    env = os.environ if env is None else env
    db_path = _db_path(flags, env)
    migrations_dir = _parse(flags, env, "--migrations", "MIGRATIONS_DIR", default_migrations_dir(), _path)
    lock_file = _parse(
        flags, env, "--lock-file", "JOB_LOCK_FILE", db_path.parent / ".relayer-job.lock", _path
    )
    _refuse_lock_on_database(lock_file, db_path)
    s3 = S3Options(
        addressing_style=_parse(
            flags,
            env,
            "--s3-addressing-style",
            "S3_ADDRESSING_STYLE",
            "auto",
            _choice(ADDRESSING_STYLES),
        ),
        checksum_mode=_parse(
            flags,
            env,
            "--s3-checksum-mode",
            "S3_CHECKSUM_MODE",
            "when_supported",
            _choice(CHECKSUM_MODES),
        ),
        sse=_parse(flags, env, "--s3-sse", "S3_SSE", None, _choice(SSE_MODES)),
        sse_kms_key_id=_parse(flags, env, "--s3-sse-kms-key-id", "S3_SSE_KMS_KEY_ID", None, _text),
        storage_class=_parse(flags, env, "--s3-storage-class", "S3_STORAGE_CLASS", None, _text),
        part_size_mb=_parse(flags, env, "--s3-part-size-mb", "S3_PART_SIZE_MB", 8, _part_size),
    )
    requested = [bool(env.get(v, "").strip()) for v in ("SCHEMA_ACCEPT_REASON", "SCHEMA_ACCEPT_FINGERPRINT")]
    if requested[0] != requested[1]:
        raise UsageError(
            "SCHEMA_ACCEPT_REASON and SCHEMA_ACCEPT_FINGERPRINT go together: the reason, and the "
            "fingerprint of the difference to accept that the exit-5 message (and 'status') prints"
        )
    if s3.sse_kms_key_id and s3.sse != "aws:kms":
        raise UsageError("--s3-sse-kms-key-id / S3_SSE_KMS_KEY_ID needs --s3-sse aws:kms")
    return Config(
        db_path=db_path,
        migrations_dir=migrations_dir,
        lock_file=lock_file,
        lock_timeout=_parse(flags, env, "--lock-timeout", "JOB_LOCK_TIMEOUT", 120.0, _seconds),
        log_format=_parse(
            flags, env, "--log-format", "LOG_FORMAT", _default_log_format(), _choice(LOG_FORMATS)
        ),
        log_level=_parse(flags, env, "--log-level", "LOG_LEVEL", "info", _choice(LOG_LEVELS)),
        deadline=_parse(flags, env, "--deadline", "JOB_DEADLINE", 600.0, _seconds),
        store_url=_parse(flags, env, "--store", "SNAPSHOT_STORE", DEFAULT_STORE, _text),
        s3=s3,
        disk_mount_path=_parse(flags, env, "--disk", "DISK_MOUNT_PATH", None, _path),
        restore_snapshot=_parse(flags, env, "--restore", "RESTORE_SNAPSHOT", None, parse_choice),
        keep_replaced=_parse(flags, env, "--keep-replaced", "RESTORE_KEEP_REPLACED", 1, _count),
        allow_network_fs=bool(flags.get("allow_network_fs")),
        allow_new_database=bool(flags.get("allow_new_database"))
        or _parse({}, env, "--allow-new-database", "ALLOW_NEW_DATABASE", False, _flag),
        schema_accept_reason=_parse({}, env, "", "SCHEMA_ACCEPT_REASON", None, _text) or None,
        schema_accept_fingerprint=_parse({}, env, "", "SCHEMA_ACCEPT_FINGERPRINT", None, _text) or None,
        allow_drift=bool(flags.get("allow_drift"))
        or _parse({}, env, "--allow-drift", "ALLOW_DRIFT", False, _flag),
        run_as=_parse({}, env, "JOB_USER", "JOB_USER", None, _text) or None,
        snapshot_interval=_parse(flags, env, "--snapshot-interval", "SNAPSHOT_INTERVAL", 900.0, _duration),
        shutdown_snapshot_budget=_parse(
            flags, env, "--shutdown-snapshot-budget", "SHUTDOWN_SNAPSHOT_BUDGET", 20.0, _duration
        ),
        retention=_parse({}, env, "", "SNAPSHOT_RETENTION", None, parse_retention),
    )


def require_settings(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, *, database: bool, store: bool
) -> None:
    """With JOB_NO_DEFAULTS=1 (set in the image) the database path and the store have no
    defaults: a command that needs them and is given neither says what to set (exit 2) instead of
    working on ./data and ./snapshots inside a container, where nothing survives."""
    env = os.environ if env is None else env
    if not _parse({}, env, "JOB_NO_DEFAULTS", "JOB_NO_DEFAULTS", False, _flag):
        return
    missing = []
    if database and _pick(flags, env, "--db", "DATABASE_PATH") is None and not env.get("DATABASE_URL"):
        missing.append(
            "DATABASE_PATH (the database file on the mounted disk, e.g. /data/relayer.db with "
            "DISK_MOUNT_PATH=/data)"
        )
    if store and _pick(flags, env, "--store", "SNAPSHOT_STORE") is None:
        missing.append("SNAPSHOT_STORE (s3://BUCKET/PREFIX or file:///PATH)")
    if missing:
        raise UsageError(f"not configured: set {' and '.join(missing)}; this image has no defaults for them")
