"""The snapshot manifest: the commit point of a snapshot, and the layout of snapshots in a store.

A snapshot exists only once its manifest exists: the data object is uploaded and verified first,
the manifest last. Layout (part of the interface):
    PREFIX/snapshots/<id>/relayer.db.zst
    PREFIX/snapshots/<id>/manifest.json
where <id> is the UTC time and a short content hash, e.g. 20261125T084512Z-3fa71d32, so that keys
are immutable and sort by time.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from job.errors import UsageError, VerificationFailed

FORMAT = "relayer-job.snapshot/1"
ROOT = "snapshots/"
DATA_NAME = "relayer.db.zst"
MANIFEST_NAME = "manifest.json"
ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\Z")
ID_TIME = "%Y%m%dT%H%M%SZ"
CREATED_AT = "%Y-%m-%dT%H:%M:%SZ"
LATEST = "latest"
# Ids run ahead of the clock by a second per snapshot taken in the same second, and clocks differ
# a little between machines; an id further ahead than this is a stray folder or a broken clock.
FUTURE_SKEW = timedelta(minutes=10)
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}\Z")


def data_key(snapshot_id: str) -> str:
    return f"{ROOT}{snapshot_id}/{DATA_NAME}"


def manifest_key(snapshot_id: str) -> str:
    return f"{ROOT}{snapshot_id}/{MANIFEST_NAME}"


def id_of(key: str) -> str | None:
    """The snapshot id a store key belongs to, or None for a key outside the layout."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == ROOT and ID_PATTERN.match(parts[1]):
        return parts[1]
    return None


def id_time(snapshot_id: str) -> datetime | None:
    """The time a snapshot id names, or None when it is not a valid id (shape and calendar)."""
    if not ID_PATTERN.match(snapshot_id):
        return None
    try:
        return datetime.strptime(snapshot_id[:16], ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def time_if_past(snapshot_id: str, now: datetime) -> datetime | None:
    """The time of a valid id no later than `now` (plus a small skew), i.e. one this job could have
    made by now; None for any other id."""
    taken = id_time(snapshot_id)
    return taken if taken is not None and taken <= now + FUTURE_SKEW else None


def make_id(stamp: int, raw_sha256: str) -> str:
    """The id for a snapshot taken at `stamp` (seconds since the epoch, UTC)."""
    made = f"{datetime.fromtimestamp(stamp, UTC).strftime(ID_TIME)}-{raw_sha256[:8]}"
    if id_time(made) is None:
        raise ValueError(f"cannot make a snapshot id for time {stamp} and hash {raw_sha256[:8]!r}")
    return made


BEFORE = "before:"
CHOICES = f"a snapshot id (YYYYMMDDTHHMMSSZ-xxxxxxxx, see 'snapshots list'), {LATEST!r} or '{BEFORE}TIME'"
TIMES = "YYYY-MM-DDTHH:MMZ or YYYY-MM-DDTHH:MM:SSZ, in UTC"
TIME_PATTERN = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"
)


def parse_time(raw: Any, source: str) -> datetime:
    """A point in time given by a user, in UTC, or exit 2 naming `source`. UTC only: a time without
    its zone, or in another one, is refused rather than guessed."""
    value = str(raw).strip()
    match = TIME_PATTERN.match(value)
    if match is None:
        raise UsageError(f"{source}: {raw!r} is not a time like 2026-11-28T09:00Z ({TIMES})")
    *parts, zone = match.groups()
    if zone not in ("Z", "z", "+00:00", "+0000"):
        raise UsageError(f"{source}: {raw!r} must be in UTC, ending in Z ({TIMES})")
    year, month, day, hour, minute, second = (int(p or 0) for p in parts)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise UsageError(f"{source}: {raw!r} is not a valid time: {exc}") from None


def parse_choice(raw: Any, source: str) -> str:
    """A snapshot chosen by a user, in its canonical form: 'latest', an id, or 'before:' and a UTC
    time (the newest restorable snapshot taken strictly before it); else exit 2 naming `source`
    (the flag or variable). The one place that reads such requests, so that new forms are added
    here; a canonical form parses to itself."""
    value = str(raw).strip()
    if value == LATEST or id_time(value) is not None:
        return value
    if value[: len(BEFORE)].lower() == BEFORE:
        return BEFORE + parse_time(value[len(BEFORE) :], source).strftime(CREATED_AT)
    raise UsageError(f"{source}: {raw!r} is not {CHOICES}")


def before_time(choice: str) -> datetime | None:
    """The time of a canonical 'before:' choice (from parse_choice), else None."""
    if not choice.startswith(BEFORE):
        return None
    return datetime.strptime(choice[len(BEFORE) :], CREATED_AT).replace(tzinfo=UTC)


def _conforms(value: object, hint: Any) -> bool:
    """Whether a JSON value has the type of a field annotation (str, int, Any, X | None, list, dict)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


@dataclass(frozen=True)
class Manifest:
    id: str
    created_at: str
    reason: str
    source_db: str
    raw_size: int
    page_size: int
    page_count: int
    journal_mode: str
    sqlite_version: str
    raw_sha256: str
    compressed_size: int
    compressed_sha256: str
    compression: dict[str, Any]
    quick_check: str
    migrations: list[dict[str, str | None]]
    schema_version: int
    job_version: str
    deploy: dict[str, str] = field(default_factory=dict)
    # Added later, absent from older manifests: foreign_key_check of the copy ("ok" or the first
    # violations), and the source's FileState for rollback-journal files (job.database), which lets
    # a later run prove the database unchanged without reading it.
    foreign_key_check: str | None = None
    source: dict[str, int] | None = None
    format: str = FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str, snapshot_id: str) -> Manifest:
        """Parse and validate the manifest of snapshot `snapshot_id`, or VerificationFailed (exit 8)
        naming the manifest and what is wrong with it."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise VerificationFailed(f"manifest {where} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise VerificationFailed(f"manifest {where} has format {found!r}; this job reads {FORMAT!r}")
        problems = _problems(raw, snapshot_id)
        if problems:
            raise VerificationFailed(f"manifest {where} is invalid: {'; '.join(problems[:3])}")
        return cls(**raw)

    @property
    def created(self) -> datetime:
        return datetime.strptime(self.created_at, CREATED_AT).replace(tzinfo=UTC)

    def same_content(self, raw_sha256: str, migrations: list[dict[str, str | None]]) -> bool:
        return self.raw_sha256 == raw_sha256 and self.migrations == migrations


def _problems(raw: dict[str, Any], snapshot_id: str) -> list[str]:
    """Everything wrong with a parsed manifest: unknown or missing fields, wrong types, and values
    the job relies on (id of its own folder, times, sizes, SHA-256 digests)."""
    hints = typing.get_type_hints(Manifest)
    known = {f.name: f for f in fields(Manifest)}
    problems = [f"unknown field {name!r}" for name in raw if name not in known]
    for name, spec in known.items():
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                problems.append(f"field {name!r} is missing")
        elif not _conforms(raw[name], hints[name]):
            problems.append(f"field {name!r} is {type(raw[name]).__name__}, not {hints[name]}")
    if problems:
        return problems
    if raw["id"] != snapshot_id:
        problems.append(f"id {raw['id']!r} is not the snapshot's own id {snapshot_id!r}")
    elif id_time(snapshot_id) is None:
        problems.append(f"id {snapshot_id!r} does not name a valid time")
    try:
        datetime.strptime(raw["created_at"], CREATED_AT)
    except ValueError:
        problems.append(f"created_at {raw['created_at']!r} is not a time like 2026-11-25T08:45:12Z")
    problems += [f"{name} is negative" for name in ("raw_size", "compressed_size") if raw[name] < 0]
    problems += [
        f"{name} is not a SHA-256 digest"
        for name in ("raw_sha256", "compressed_sha256")
        if not SHA256_PATTERN.match(raw[name])
    ]
    return problems
