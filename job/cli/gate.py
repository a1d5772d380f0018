"""relayer-job gate [--hold-lock] -- COMMAND [ARGS...]"""

from __future__ import annotations

import argparse

from job import deploy
from job.cli.deploy import configure as configure_deploy
from job.cli.outcome import Outcome
from job.config import Config

HELP = "run deploy, then exec COMMAND (the relayer) only if it succeeded"


def configure(parser: argparse.ArgumentParser) -> None:
    configure_deploy(parser)
    parser.add_argument(
        "--hold-lock",
        action="store_true",
        help="hand COMMAND a shared disk lock for its lifetime, so manual migrate/restore refuse",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


def run(config: Config, args: argparse.Namespace) -> Outcome:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    facts = deploy.gate(config, argv, hold_lock=args.hold_lock)
    return Outcome(facts, exec_argv=argv)
