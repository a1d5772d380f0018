"""relayer-job gate [--hold-lock | --supervise [--snapshot-interval D] [--shutdown-snapshot-budget D]]
-- COMMAND [ARGS...]"""

from __future__ import annotations

import argparse
import functools

from job import deploy, supervisor
from job.cli.deploy import configure as configure_deploy
from job.cli.outcome import Outcome
from job.config import Config

HELP = "run deploy, then exec COMMAND (the relayer) only if it succeeded, or supervise it"


def configure(parser: argparse.ArgumentParser) -> None:
    configure_deploy(parser)
    parser.add_argument(
        "--hold-lock",
        action="store_true",
        help="hand COMMAND a shared disk lock for its lifetime, so manual migrate/restore refuse",
    )
    parser.add_argument(
        "--supervise",
        action="store_true",
        help="run COMMAND as a child instead of exec'ing it (implies --hold-lock): signals "
        "forwarded, snapshots every --snapshot-interval and after a stop, exit with its code",
    )
    parser.add_argument(
        "--snapshot-interval",
        metavar="DURATION",
        help="with --supervise: time between periodic snapshots, e.g. 30s, 15m, 1h; 0 = none "
        "(default 15m) [SNAPSHOT_INTERVAL]",
    )
    parser.add_argument(
        "--shutdown-snapshot-budget",
        metavar="DURATION",
        help="with --supervise: time after SIGTERM/SIGINT/SIGHUP within which the relayer's exit "
        "and a final snapshot must fit; 0 = no final snapshot (default 20s) [SHUTDOWN_SNAPSHOT_BUDGET]",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


def run(config: Config, args: argparse.Namespace) -> Outcome:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    facts, lock = deploy.gate(config, argv, hold_lock=args.hold_lock, supervise=args.supervise)
    if args.supervise and lock is not None:
        newest = facts.get("post_migrate_snapshot_id") or facts.get("snapshot_id")
        supervise = functools.partial(supervisor.run, config, argv, lock, newest)
        return Outcome(facts, exec_argv=argv, supervise=supervise)
    return Outcome(facts, exec_argv=argv)
