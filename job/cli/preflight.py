"""relayer-job preflight"""

from __future__ import annotations

import argparse

from job import preflight
from job.cli import options
from job.cli.outcome import Outcome
from job.config import Config

HELP = "disk-free checks for Render's pre-deploy command: files, store, rehearsal on the latest snapshot"


def configure(parser: argparse.ArgumentParser) -> None:
    options.add_allow_drift(parser)


def run(config: Config, args: argparse.Namespace) -> Outcome:
    return Outcome(preflight.run(config))
