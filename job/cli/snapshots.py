"""relayer-job snapshots list [--json] [--since TIME] [--until TIME] | verify [ID|latest] [--download]
| prune [--keep-last N] [--keep-hourly H] [--keep-daily D] [--keep-weekly W] [--keep-days D]
  [--apply] [--delete-damaged] [--json]"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from job import catalog, retention
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config
from job.deadline import Deadline
from job.errors import UsageError
from job.manifest import TIMES, parse_time
from job.store import open_store

HELP = "list, verify or prune the snapshots in the store"
WRITES_STDOUT = True


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    shared = [options.common(), options.store()]
    listing = actions.add_parser("list", help="committed snapshots, newest first", parents=shared)
    listing.add_argument("--json", action="store_true", help="print a JSON array on stdout")
    listing.add_argument(
        "--since",
        metavar="TIME",
        type=_time("--since"),
        help=f"only snapshots taken at or after TIME ({TIMES})",
    )
    listing.add_argument(
        "--until",
        metavar="TIME",
        type=_time("--until"),
        help=f"only snapshots taken at or before TIME ({TIMES})",
    )
    verify = actions.add_parser(
        "verify",
        help="check a snapshot (with --download: a restore drill)",
        description="Check that a snapshot's manifest and data object are present with the right "
        "size; with --download, also download it, check both SHA-256 values, decompress it and run "
        "integrity_check in a temporary directory (touches nothing live). Mismatch: exit 8.",
        parents=shared,
    )
    options.add_snapshot_choice(verify, "verify")
    verify.add_argument(
        "--download",
        action="store_true",
        help="download, check both SHA-256 values, decompress, and run integrity_check, quick_check "
        "and foreign_key_check (a restore drill)",
    )
    prune = actions.add_parser(
        "prune",
        help="delete the snapshots a retention policy leaves out (dry run unless --apply)",
        description="Keep the union of the rules (restic's meaning, in UTC): the N newest; the "
        "newest of each of the H (D, W) most recent hours (days, ISO weeks) that have snapshots; "
        "pre-migrate and pre-restore snapshots younger than --keep-days; always the newest "
        "restorable one. Without --keep-* flags the policy is SNAPSHOT_RETENTION.",
        parents=shared,
    )
    prune.add_argument(
        "--keep-last", metavar="N", help="the N newest snapshots (any --keep-* replaces SNAPSHOT_RETENTION)"
    )
    for name, span in (("hourly", "hours"), ("daily", "UTC days"), ("weekly", "ISO weeks")):
        prune.add_argument(
            f"--keep-{name}",
            metavar="N",
            help=f"the newest snapshot of each of the N most recent {span} that have snapshots",
        )
    prune.add_argument(
        "--keep-days",
        metavar="D",
        help="also keep pre-migrate and pre-restore snapshots younger than D days, whatever the rules",
    )
    prune.add_argument("--apply", action="store_true", help="really delete")
    prune.add_argument(
        "--delete-damaged",
        action="store_true",
        help="also delete damaged snapshots (unreadable or invalid manifest, data missing or of the "
        "wrong size); without it they are only reported",
    )
    prune.add_argument("--json", action="store_true", help="print the plan as a JSON object on stdout")


def _time(flag: str) -> Callable[[str], datetime]:
    return lambda raw: parse_time(raw, flag)


def _number(raw: str | None, flag: str) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{flag}: expected a number, got {raw!r}") from None


def run(config: Config, args: argparse.Namespace) -> Outcome:
    deadline = Deadline(config.deadline)
    store = open_store(config.store_url, config.s3, deadline)
    if args.action == "list":
        rows = [catalog.summary(m) for m in catalog.listed(store, since=args.since, until=args.until)]
        if args.json:
            print(json.dumps(rows), flush=True)
        else:
            for row in rows:
                print(
                    f"{row['id']}  {row['created_at']}  {row['size']:>12} B  "
                    f"schema {row['schema_version']}  {row['reason']}"
                    + (f"  commit {row['commit'][:12]}" if row["commit"] else ""),
                    flush=True,
                )
            if not rows:
                between = " in that time range" if args.since or args.until else ""
                print(f"no restorable snapshots{between} in {store.url}", flush=True)
        return Outcome({"count": len(rows), "store": store.url})
    if args.action == "verify":
        facts = catalog.verify(store, args.which, download=args.download, deadline=deadline)
        checked = (
            "downloaded, both SHA-256 values, integrity_check and foreign_key_check ok"
            if args.download
            else "present and the size matches; content not checked (add --download)"
        )
        print(f"snapshot {facts['id']}: {checked}", flush=True)
        return Outcome(facts)
    policy = (
        retention.from_flags({n: getattr(args, f"keep_{n}") for n in retention.NAMES}) or config.retention
    )
    if policy is None:
        raise UsageError(
            "snapshots prune: give the policy with --keep-last, --keep-hourly, --keep-daily and/or "
            "--keep-weekly (and --keep-days), or set SNAPSHOT_RETENTION"
        )
    plan = catalog.prune(store, policy=policy, apply=args.apply, delete_damaged=args.delete_damaged)
    plan["policy"] = retention.describe(policy)
    if args.json:
        print(json.dumps(plan), flush=True)
    else:
        _print_plan(plan)
    return Outcome(plan)


def _print_plan(plan: dict[str, Any]) -> None:
    """The plan as a table: what is kept and why, what goes, what is damaged, what is left over."""
    rows = [
        *(("keep", i, plan["kept_because"][i]) for i in plan["keep"]),
        *(("delete", i, "kept by no rule of the policy") for i in plan["delete"]),
        *(
            ("damaged", i, plan["problems"][i] + ("" if plan["delete_damaged"] else " (kept)"))
            for i in plan["damaged"]
        ),
        *(("leftover", i, "no manifest, older than an hour") for i in plan["leftovers"]),
    ]
    print(f"snapshots in {plan['store']}, policy {plan['policy']}:", flush=True)
    for action, snapshot_id, why in rows:
        info = plan["snapshots"].get(snapshot_id, {})
        print(f"  {action:<8}  {snapshot_id}  {info.get('reason', ''):<12}  {why}", flush=True)
    if not rows:
        print("  (none)", flush=True)
    doomed = len(plan["delete"]) + len(plan["leftovers"])
    doomed += len(plan["damaged"]) if plan["delete_damaged"] else 0
    verb = "deleted" if plan["applied"] else "would be deleted (dry run: pass --apply)"
    print(f"{doomed} {verb}; {len(plan['keep'])} kept", flush=True)
    if plan["damaged"] and not plan["delete_damaged"]:
        print(
            f"{len(plan['damaged'])} damaged, kept: check them with 'snapshots verify ID', "
            "delete them with --delete-damaged",
            flush=True,
        )
