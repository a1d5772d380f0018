"""relayer-job status [--json]"""

from __future__ import annotations

import argparse
import json

from job import status
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config
from job.errors import JobError

HELP = "show the database, its migrations, drift and the last snapshot; changes nothing"
WRITES_STDOUT = True  # the report goes to stdout, so logs go to stderr


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_disk(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(config: Config, args: argparse.Namespace) -> Outcome:
    try:
        report, problem = status.report(config)
    except JobError as exc:
        if args.json:  # a script reading stdout still gets one object
            print(json.dumps({"error": exc.message, "exit_code": exc.exit_code}), flush=True)
        raise
    print(json.dumps(report, indent=None) if args.json else status.render_text(report), flush=True)
    if problem is not None:
        raise problem
    return Outcome({"schema_version": report.get("schema_version")})
