"""Which restorable snapshots a prune keeps, and why.

A pure function of the snapshots, the policy and the time, with no store in sight, so that the
rules can be tested on their own (over simulated months) and new ones added here. Its input is only
what is proven restorable; the catalog decides that, and applies the result.

The rules are restic's (`restic forget`), in UTC: the union of
- `last=N`: the N newest snapshots;
- `hourly=H`, `daily=D`, `weekly=W`: the newest snapshot of each of the H (D, W) most recent hours
  (UTC days, ISO weeks) that have snapshots, not of the last H calendar hours: a week without
  snapshots does not use up `daily`;
- `days=D`: `pre-migrate` and `pre-restore` snapshots (the ways back from a deploy or a restore)
  younger than D days, whatever the other rules say;
- always the newest restorable snapshot: a prune never leaves the store without a way back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from job.errors import UsageError

WAYS_BACK = ("pre-migrate", "pre-restore")
FLAGS = "--keep-last / --keep-hourly / --keep-daily / --keep-weekly"


@dataclass(frozen=True)
class Candidate:
    id: str
    created_at: datetime
    reason: str


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_days: float | None = None
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0


def _hour(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:00")


def _day(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


# (policy field, the name in SNAPSHOT_RETENTION, what a bucket is called, the bucket of a time)
BUCKETS: tuple[tuple[str, str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", "hour", _hour),
    ("keep_daily", "daily", "day", _day),
    ("keep_weekly", "weekly", "ISO week", _week),
)
NAMES = {"last": "keep_last", **{name: field for field, name, _, _ in BUCKETS}, "days": "keep_days"}


def keep(candidates: Iterable[Candidate], policy: Policy, now: datetime) -> dict[str, list[str]]:
    """The ids to keep, each with the rules that keep it. A bucket rule spends one of its count
    on each new bucket it meets, newest first, whether or not another rule keeps that snapshot
    too (restic's meaning)."""
    newest_first = sorted(candidates, key=lambda c: c.id, reverse=True)
    left = {field: int(getattr(policy, field)) for field, _, _, _ in BUCKETS}
    seen: dict[str, str] = {}
    kept: dict[str, list[str]] = {}
    for rank, candidate in enumerate(newest_first):
        why = []
        if rank == 0:
            why.append("newest restorable")
        if rank < policy.keep_last:
            why.append(f"one of the last {policy.keep_last}")
        when = candidate.created_at.astimezone(UTC)
        for field, _, label, bucket in BUCKETS:
            key = bucket(when)
            if left[field] > 0 and seen.get(field) != key:
                seen[field] = key
                left[field] -= 1
                why.append(f"newest of {label} {key}")
        if (
            policy.keep_days is not None
            and candidate.reason in WAYS_BACK
            and now - candidate.created_at <= timedelta(days=policy.keep_days)
        ):
            why.append(f"{candidate.reason} younger than {policy.keep_days:g} days")
        if why:
            kept[candidate.id] = why
    return kept


def count(raw: object, source: str) -> int:
    """A rule's count: a whole number >= 0, else exit 2 naming `source`."""
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit():
        raise UsageError(f"{source}: expected a whole number >= 0, got {raw!r}")
    return int(text)


def days(raw: object, source: str) -> float:
    """A number of days >= 0 (fractions allowed), else exit 2 naming `source`."""
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise UsageError(f"{source}: expected a number of days, got {raw!r}") from None
    if not 0 <= value < math.inf:
        raise UsageError(f"{source}: expected a number of days >= 0, got {raw!r}")
    return value


def validate(policy: Policy, source: str = FLAGS) -> Policy:
    """A policy that keeps something by rule, or exit 2: `last=0` and nothing else would leave
    only the newest snapshot, which is never what an operator means."""
    if not any(getattr(policy, f) > 0 for f in ("keep_last", *(b[0] for b in BUCKETS))):
        raise UsageError(
            f"{source}: at least one of last, hourly, daily, weekly must be at least 1 (the newest "
            "restorable snapshot is always kept on top of it)"
        )
    if policy.keep_days is not None:
        days(policy.keep_days, f"{source} (days)")
    return policy


def parse(raw: object, source: str) -> Policy | None:
    """`SNAPSHOT_RETENTION`: `last=10,hourly=24,daily=14,weekly=8,days=30` (any subset, any
    order); empty means no automatic retention."""
    text = str(raw).strip()
    if not text:
        return None
    values: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        name, equals, value = (s.strip() for s in part.partition("="))
        field = NAMES.get(name.lower())
        if not equals or field is None:
            raise UsageError(
                f"{source}: {part!r} is not a rule; expected NAME=N with NAME one of "
                f"{', '.join(NAMES)}, e.g. last=10,hourly=24,daily=14,weekly=8,days=30"
            )
        if field in values:
            raise UsageError(f"{source}: {name} is given twice")
        values[field] = _convert(field, value, f"{source} {name}")
    return validate(Policy(**values), source)


def from_flags(given: dict[str, object | None]) -> Policy | None:
    """The policy of `snapshots prune --keep-NAME VALUE` flags (NAME -> raw value, None when the
    flag is not given), or None when no flag is given."""
    values: dict[str, Any] = {
        NAMES[name]: _convert(NAMES[name], raw, f"--keep-{name}")
        for name, raw in given.items()
        if raw is not None
    }
    return validate(Policy(**values)) if values else None


def _convert(field: str, raw: object, source: str) -> int | float:
    return days(raw, source) if field == "keep_days" else count(raw, source)


def describe(policy: Policy) -> str:
    """The policy in SNAPSHOT_RETENTION's syntax, only the rules in force."""
    parts = []
    for name, field in NAMES.items():
        value = getattr(policy, field)
        if field == "keep_days":
            parts += [] if value is None else [f"days={value:g}"]
        elif value:
            parts.append(f"{name}={value}")
    return ",".join(parts)
