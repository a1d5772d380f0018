"""relayer-job gate [--hold-lock] -- COMMAND [ARGS...]"""

from __future__ import annotations

import argparse
import shutil

from job import deploy
from job.cli.deploy import configure as configure_deploy
from job.cli.outcome import Outcome
from job.config import Config
from job.errors import UsageError

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
    if not argv:
        raise UsageError("gate: give the command to start after a successful deploy: gate -- relayer")
    if shutil.which(argv[0]) is None:
        raise UsageError(f"gate: command {argv[0]!r} not found on PATH; nothing was changed")
    facts, lock = deploy.run(config, allow_drift=args.allow_drift, keep_lock=args.hold_lock)
    if lock is not None:
        lock.share(holder=f"{' '.join(argv)} (started by gate --hold-lock)")
    return Outcome({**facts, "exec": argv}, exec_argv=argv)
