"""relayer-job restore [ID|latest|before:TIME] [--before TIME] [--force] [--if-db-not-exists]
[--ignore-other-connections] [--keep-replaced N]"""

from __future__ import annotations

import argparse

from job import restore
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config
from job.errors import UsageError
from job.manifest import BEFORE, LATEST, TIMES, parse_choice

HELP = "replace the database with a proved snapshot (the current one is snapshotted and kept)"


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_snapshot_choice(parser, "restore")
    parser.set_defaults(which=None)  # to tell `latest` given from `latest` by default (--before)
    parser.add_argument(
        "--before",
        metavar="TIME",
        type=lambda raw: parse_choice(f"{BEFORE}{raw}", "--before"),
        help=f"the newest restorable snapshot taken strictly before TIME ({TIMES})",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a database that holds data (it is kept on the disk)"
    )
    parser.add_argument(
        "--if-db-not-exists",
        action="store_true",
        help="do nothing when a database holding tables exists (for a start-up restore onto an empty disk)",
    )
    parser.add_argument(
        restore.OVERRIDE_FLAG,
        action="store_true",
        help="replace the database even though another process has it open (its writes since are lost)",
    )
    parser.add_argument(
        "--keep-replaced",
        metavar="N",
        help="replaced databases to keep on the disk, newest first (default 1) [RESTORE_KEEP_REPLACED]",
    )
    options.add_disk(parser)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    if args.before and args.which:
        raise UsageError(f"restore: give a snapshot ({args.which}) or --before TIME, not both")
    return Outcome(
        restore.run(
            config,
            which=args.before or args.which or LATEST,
            force=args.force,
            if_db_not_exists=args.if_db_not_exists,
            ignore_others=args.ignore_other_connections,
        )
    )
