"""Which restorable snapshots a prune keeps, and why.

A pure function of the snapshots and the time, with no store in sight, so that retention rules can
be tested on their own and new ones added here. Its input is only what is proven restorable; the
catalog decides that, and applies the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Candidate:
    id: str
    created_at: datetime
    reason: str


@dataclass(frozen=True)
class Policy:
    keep_last: int
    keep_days: float | None = None


def keep(candidates: Iterable[Candidate], policy: Policy, now: datetime) -> dict[str, list[str]]:
    """The ids to keep, each with why. The newest candidate is kept whatever the policy says: a
    prune must never leave the store without a way back."""
    newest_first = sorted(candidates, key=lambda c: c.id, reverse=True)
    kept: dict[str, list[str]] = {}
    for rank, candidate in enumerate(newest_first):
        why = []
        if rank == 0:
            why.append("newest restorable")
        if rank < policy.keep_last:
            why.append(f"one of the last {policy.keep_last}")
        if policy.keep_days is not None and now - candidate.created_at <= timedelta(days=policy.keep_days):
            why.append(f"younger than {policy.keep_days:g} days")
        if why:
            kept[candidate.id] = why
    return kept
