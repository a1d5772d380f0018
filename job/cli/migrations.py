"""relayer-job migrations compare DIR_A DIR_B"""

from __future__ import annotations

import argparse
from pathlib import Path

from job import replay
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config
from job.deadline import Deadline

HELP = "compare two migration directories version by version (file names and resulting schemas)"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    compare = actions.add_parser(
        "compare",
        help=HELP,
        description="Replay both directories on empty databases and compare, version by version, "
        "the file names (the relayer's ledger keys) and the schemas they build. Exit 0 when a "
        "database migrated from either is the same; exit 5 listing every difference otherwise.",
        parents=[options.common()],
    )
    compare.add_argument("first", metavar="DIR_A")
    compare.add_argument("second", metavar="DIR_B")


def run(config: Config, args: argparse.Namespace) -> Outcome:
    replay.require_same(Path(args.first), Path(args.second), Deadline(config.deadline))
    return Outcome({"same": True})
