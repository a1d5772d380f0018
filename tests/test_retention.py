"""Retention by policy (restic's rules, UTC): the pure rules over a simulated month with an injected
clock, and the policy applied for real after `snapshot` and `deploy` and shown by `snapshots prune`."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job import retention
from job.retention import Candidate, Policy
from tests.conftest import base_env, run_cli
from tests.support.legacy import build_legacy_001
from tests.test_snapshot import snap, snapshot_versions

EVERY = timedelta(minutes=15)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def candidate(when: datetime, reason: str = "periodic") -> Candidate:
    return Candidate(f"{when:%Y%m%dT%H%M%SZ}-00000000", when, reason)


def test_thirty_days_of_periodic_snapshots_keep_exactly_what_the_rules_say() -> None:
    """A snapshot every 15 minutes for 30 days (November 2, a Monday, to December 1), deploys on
    three days, the policy applied after each snapshot with the clock of that moment."""
    policy = retention.parse("last=10,hourly=24,daily=14,weekly=8,days=7", "SNAPSHOT_RETENTION")
    assert policy is not None
    deploys = {at(2026, 11, 5, 10), at(2026, 11, 24, 9), at(2026, 11, 26, 10)}
    survivors: list[Candidate] = []
    everything: list[Candidate] = []
    now = at(2026, 11, 2)
    while now < at(2026, 12, 2):
        new = candidate(now, "pre-migrate" if now in deploys else "periodic")
        everything.append(new)
        kept = retention.keep([*survivors, new], policy, now)
        survivors = [c for c in [*survivors, new] if c.id in kept]
        now += EVERY
    now -= EVERY  # the last snapshot: December 1, 23:45

    last_ten = {now - EVERY * k for k in range(10)}
    hourly = {at(2026, 12, 1, hour, 45) for hour in range(24)}
    daily = {at(2026, 11, 18, 23, 45) + timedelta(days=d) for d in range(14)}
    weekly = {at(2026, 11, day, 23, 45) for day in (8, 15, 22, 29)} | {now}  # only 5 ISO weeks exist
    ways_back = {at(2026, 11, 26, 10)}  # the deploy of the 24th is older than 7 days
    assert {c.created_at for c in survivors} == last_ten | hourly | daily | weekly | ways_back
    final = retention.keep(survivors, policy, now)
    assert final[candidate(at(2026, 11, 26, 10)).id] == ["pre-migrate younger than 7 days"]
    assert final[candidate(at(2026, 11, 22, 23, 45)).id] == [
        "newest of day 2026-11-22",
        "newest of ISO week 2026-W47",
    ]
    assert final[candidate(now).id][:3] == [
        "newest restorable",
        "one of the last 10",
        "newest of hour 2026-12-01 23:00",
    ]
    # Pruning after every snapshot decides as one prune of everything at the end would.
    assert set(retention.keep(everything, policy, now)) == set(final)


def test_buckets_count_days_that_have_snapshots_and_iso_weeks() -> None:
    days = [
        at(2026, 12, 1, 8),
        at(2026, 12, 1, 9),
        at(2026, 12, 10, 7),
        at(2026, 12, 31, 12),
        at(2027, 1, 1, 6),
    ]
    snapshots = [candidate(d) for d in days]
    daily = retention.keep(snapshots, Policy(keep_daily=3), at(2027, 1, 20))
    # the three most recent days that have snapshots, however far apart (not the last 3 calendar days)
    assert set(daily) == {candidate(days[i]).id for i in (2, 3, 4)}
    # December 31, 2026 and January 1, 2027 are both in ISO week 2026-W53
    weekly = retention.keep(snapshots, Policy(keep_weekly=2), at(2027, 1, 20))
    assert weekly == {
        candidate(days[4]).id: ["newest restorable", "newest of ISO week 2026-W53"],
        candidate(days[2]).id: ["newest of ISO week 2026-W50"],
    }
    # a bucket is spent on the newest snapshot even when another rule keeps it already (restic)
    both = retention.keep(snapshots, Policy(keep_last=2, keep_daily=2), at(2027, 1, 20))
    assert sorted(both) == sorted(candidate(d).id for d in (days[3], days[4]))


def test_policies_are_checked_and_named_in_errors(tmp_path: Path) -> None:
    db = tmp_path / "relayer.db"
    build_legacy_001(db, commands=5)
    store = f"file:{tmp_path / 'store'}"
    for bad, says in [
        ("daily=7,monthly=3", "'monthly=3' is not a rule"),
        ("last=0", "at least one of last, hourly, daily, weekly must be at least 1"),
        ("last=ten", "SNAPSHOT_RETENTION last: expected a whole number"),
        ("last=3,days=-1", "SNAPSHOT_RETENTION days: expected a number of days >= 0"),
    ]:
        run = run_cli("snapshot", "--db", str(db), "--store", store, env=base_env(SNAPSHOT_RETENTION=bad))
        assert run.rc == 2 and run.error.startswith("SNAPSHOT_RETENTION") and says in run.error, run.error
    assert not (tmp_path / "store").exists()
    none = run_cli("snapshots", "prune", "--store", store)
    assert none.rc == 2 and "SNAPSHOT_RETENTION" in none.error and "--keep-daily" in none.error
    flag = run_cli("snapshots", "prune", "--keep-daily", "1.5", "--store", store)
    assert flag.rc == 2 and flag.error.startswith("--keep-daily: expected a whole number")


def test_snapshot_applies_the_retention_after_a_new_snapshot_only(tmp_path: Path) -> None:
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=10)
    env = base_env(SNAPSHOT_RETENTION="last=2")
    runs = []

    def take() -> str:
        runs.append(snap(run_cli, db, store, env=env))
        return str(runs[-1].finished["snapshot_id"])

    ids = snapshot_versions(db, 3, take)
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == ids[1:]
    assert runs[-1].event("retention.applied")["deleted"] == [ids[0]]
    assert runs[-1].finished["retention_deleted"] == [ids[0]]
    again = snap(run_cli, db, store, env=env)
    assert again.finished["unchanged"] and not [
        e for e in again.events if e.get("event") == "retention.applied"
    ]


def test_deploy_applies_the_retention(tmp_path: Path) -> None:
    db, store = tmp_path / "data" / "relayer.db", tmp_path / "store"
    db.parent.mkdir()
    build_legacy_001(db, commands=10)
    env = base_env(DATABASE_PATH=str(db), SNAPSHOT_STORE=f"file:{store}", SNAPSHOT_RETENTION="last=1")
    run = run_cli("deploy", env=env)
    assert run.rc == 0, run.stdout
    post = run.finished["post_migrate_snapshot_id"]
    assert run.finished["retention_deleted"] == [run.finished["snapshot_id"]]
    assert [p.name for p in (store / "snapshots").iterdir()] == [post]


def dated_store(tmp_path: Path, times: list[datetime]) -> Path:
    """A file store holding one real snapshot copied under ids and times of the past."""
    db, store = tmp_path / "relayer.db", tmp_path / "store"
    build_legacy_001(db, commands=5)
    real = snap(run_cli, db, store).finished["snapshot_id"]
    source = store / "snapshots" / real
    for when in times:
        made = candidate(when).id.replace("-00000000", f"-{real[-8:]}")
        shutil.copytree(source, store / "snapshots" / made)
        manifest = json.loads((source / "manifest.json").read_text())
        manifest.update(id=made, created_at=f"{when:%Y-%m-%dT%H:%M:%SZ}", reason="periodic")
        (store / "snapshots" / made / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(source)
    return store


def test_prune_dry_run_shows_the_policy_and_why_each_snapshot_is_kept(tmp_path: Path) -> None:
    times = [at(2026, 3, 2, 9), at(2026, 3, 2, 17), at(2026, 3, 4, 8), at(2026, 3, 4, 12), at(2026, 3, 9, 8)]
    store = dated_store(tmp_path, times)
    ids = [p.name for p in sorted((store / "snapshots").iterdir())]
    env = base_env(SNAPSHOT_STORE=f"file:{store}", SNAPSHOT_RETENTION="daily=2")
    dry = run_cli("snapshots", "prune", env=env)
    assert dry.rc == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].endswith("policy daily=2:")
    fate = {line.split()[1]: line for line in lines[1:] if line.startswith("  ")}
    assert "newest restorable" in fate[ids[4]] and "newest of day 2026-03-09" in fate[ids[4]]
    assert fate[ids[3]].split()[0] == "keep" and "newest of day 2026-03-04" in fate[ids[3]]
    assert [fate[i].split()[0] for i in ids[:3]] == ["delete"] * 3
    assert len(list((store / "snapshots").iterdir())) == 5  # a dry run deletes nothing

    weekly = run_cli("snapshots", "prune", "--keep-weekly", "2", "--json", "--apply", env=env)
    plan = json.loads(weekly.stdout)  # the flags replace SNAPSHOT_RETENTION
    assert plan["policy"] == "weekly=2" and plan["keep"] == [ids[4], ids[3]]
    assert plan["kept_because"][ids[3]] == "newest of ISO week 2026-W10"
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == [ids[3], ids[4]]
