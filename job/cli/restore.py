"""relayer-job restore [ID|latest] [--force] [--if-db-not-exists]"""

from __future__ import annotations

import argparse

from job import restore
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = "replace the database with a verified snapshot (the current one is snapshotted and kept)"


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_snapshot_choice(parser, "restore")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing database (it is kept on the disk)"
    )
    parser.add_argument(
        "--if-db-not-exists",
        action="store_true",
        help="do nothing when a database exists (for a start-up restore onto an empty disk)",
    )
    options.add_disk(parser)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    return Outcome(
        restore.run(config, which=args.which, force=args.force, if_db_not_exists=args.if_db_not_exists)
    )
