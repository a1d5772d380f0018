"""relayer-job status [--json]"""

from __future__ import annotations

import argparse
import json

from job import status
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = "show the database, its migrations, drift and the last snapshot; changes nothing"
WRITES_STDOUT = True  # the report goes to stdout, so logs go to stderr


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_disk(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(config: Config, args: argparse.Namespace) -> Outcome:
    report, problem = status.report(config)
    print(json.dumps(report) if args.json else status.render_text(report), flush=True)
    if problem is not None:  # after the report: it still shows everything that could be read
        raise problem
    return Outcome({"schema_version": report.get("schema_version")})
