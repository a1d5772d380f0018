"""relayer-job deploy [--disk PATH] [--allow-drift]"""

from __future__ import annotations

import argparse

from job import deploy
from job.cli.outcome import Outcome
from job.config import Config

HELP = "check, snapshot and migrate the database on the disk (the start-path job)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disk",
        metavar="PATH",
        help="refuse unless PATH is a mounted disk holding the database [DISK_MOUNT_PATH]",
    )
    parser.add_argument(
        "--allow-drift",
        action="store_true",
        help="migrate even if the live schema differs from the migrations' (exit 5 otherwise)",
    )


def run(config: Config, args: argparse.Namespace) -> Outcome:
    facts, _ = deploy.run(config, allow_drift=args.allow_drift)
    return Outcome(facts)
