"""relayer-job snapshot [--reason R] [--if-db-exists] [--force]"""

from __future__ import annotations

import argparse

from job import retain
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = (
    "snapshot the database to the store (consistent copy, zstd, SHA-256, manifest last), then apply "
    "SNAPSHOT_RETENTION"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="upload even if the newest snapshot has the same content (e.g. its object is damaged)",
    )
    options.add_disk(parser)
    parser.add_argument("--reason", default="manual", help="recorded in the manifest (default manual)")
    parser.add_argument(
        "--if-db-exists", action="store_true", help="succeed without a snapshot when there is no database"
    )


def run(config: Config, args: argparse.Namespace) -> Outcome:
    return Outcome(
        retain.snapshot_command(config, reason=args.reason, if_db_exists=args.if_db_exists, force=args.force)
    )
