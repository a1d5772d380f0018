"""relayer-job schema accept --reason TEXT | schema accept --revoke ID"""

from __future__ import annotations

import argparse

from job import accept
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config
from job.errors import UsageError

HELP = "accept the live schema's difference from the migrations once, audited (or revoke that)"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    accepting = actions.add_parser(
        "accept",
        help="record the current difference as accepted (on the disk, under the lock, snapshot first)",
        description="Record the live schema's current difference from the replayed migrations, with "
        "fingerprints, the reason, the time and the Render context, in the database itself. Later "
        "runs of status, migrate, deploy, gate and preflight accept exactly that difference (a "
        "warning names the acceptance); any other difference is still exit 5. When the schema "
        "shows files applied that the ledger does not record, this records them instead.",
        parents=[options.common(), options.store()],
    )
    accepting.add_argument("--reason", metavar="TEXT", help="why the difference is accepted (required)")
    accepting.add_argument("--revoke", metavar="ID", help="revoke acceptance ID (see 'status')")
    options.add_disk(accepting)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    revoke = None
    if args.revoke is not None:
        if not str(args.revoke).isdigit():
            raise UsageError(f"--revoke: expected an acceptance id (a number), got {args.revoke!r}")
        revoke = int(args.revoke)
    return Outcome(accept.run(config, reason=args.reason, revoke=revoke))
