"""relayer-job deploy [--disk PATH] [--allow-drift]"""

from __future__ import annotations

import argparse

from job import deploy
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = "check, snapshot and migrate the database on the disk (the start-path job)"


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_disk(parser)
    parser.add_argument(
        "--restore",
        metavar="ID|latest|before:TIME",
        help="restore this snapshot first, once (recorded on the disk) [RESTORE_SNAPSHOT]",
    )
    options.add_allow_drift(parser)
    options.add_allow_new_database(parser)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    facts, _ = deploy.run(config)
    return Outcome(facts)
