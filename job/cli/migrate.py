"""relayer-job migrate [--dry-run] [--allow-drift] [--allow-new-database]"""

from __future__ import annotations

import argparse
from typing import Any

from job import migrate
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = "apply pending migrations under the disk lock"


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_disk(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="rehearse on a consistent copy of the database; the database is not changed",
    )
    options.add_allow_drift(parser)
    options.add_allow_new_database(parser)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    facts: dict[str, Any] = migrate.run(config, dry_run=args.dry_run)
    return Outcome(facts)
