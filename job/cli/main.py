"""Entry point: parse, load the configuration, run one subcommand, map errors to exit codes.

This is the only place that knows about argv and exit codes. Every run ends with exactly one
`job.finished` event carrying the outcome, the exit code, the duration and the run's key facts.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from traceback import print_exc
from types import ModuleType
from typing import Any, NoReturn, TextIO

from job import __version__, privileges, stop
from job import config as config_module
from job import log as logging_setup
from job.cli import (
    deploy,
    gate,
    migrate,
    migrations,
    options,
    preflight,
    restore,
    schema,
    snapshot,
    snapshots,
    status,
)
from job.cli.outcome import Outcome
from job.deploy import start_failed
from job.errors import JobError, Stopped, UsageError, translate

COMMANDS: dict[str, ModuleType] = {
    "migrate": migrate,
    "status": status,
    "snapshot": snapshot,
    "snapshots": snapshots,
    "deploy": deploy,
    "gate": gate,
    "preflight": preflight,
    "restore": restore,
    "schema": schema,
    "migrations": migrations,
}
USES_STORE: set[str] = {"status", "snapshot", "snapshots", "deploy", "gate", "preflight", "restore"}
# What a command needs configured (JOB_NO_DEFAULTS) and whether it touches the database (JOB_USER).
USES_DATABASE: set[str] = {"status", "snapshot", "deploy", "gate", "migrate", "restore", "schema"}
NEEDS_STORE: set[str] = USES_STORE | {"schema"}  # `schema accept` adds the store options itself
# migrate has the store options without needing them: it reads the store only when about to create
# or adopt an empty database, to refuse that while the store holds snapshots (job.newdb).
STORE_OPTIONS: set[str] = USES_STORE | {"migrate"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage and the error on stderr, as every CLI does; then exit 2 through job.finished."""
        hint = ""
        if "argument COMMAND: invalid choice" in message:
            hint = " (options go after the subcommand: relayer-job COMMAND --option ...)"
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}{hint}", file=sys.stderr, flush=True)
        raise UsageError(f"{self.prog}: {message}{hint}")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an unknown option is reported with the usage of the subcommand
        it was given to, not the top-level one."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            getattr(parsed, "parser", self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser() -> Parser:
    parser = Parser(
        prog="relayer-job",
        description="Snapshot, migrate and guard the relayer's SQLite database on every deploy.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 usage, 3 lock, 4 environment refused, "
        "5 database problem, 6 store failure, 7 migration failed (rolled back), "
        "8 verification failed, 9 deadline exceeded, 128+N stopped by signal N (143 SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"relayer-job {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, module in COMMANDS.items():
        parents: list[argparse.ArgumentParser] = [options.common()] + (
            [options.store()] if name in STORE_OPTIONS else []
        )
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            parents=parents,  # type: ignore[arg-type]
        )
        module.configure(command)
        command.set_defaults(module=module, parser=command)
    return parser


def _finish(started: float, outcome: str, exit_code: int, **facts: Any) -> int:
    logging_setup.get_logger().log(
        logging.INFO if exit_code == 0 else logging.ERROR,
        "job.finished",
        outcome=outcome,
        exit_code=exit_code,
        duration_s=round(time.monotonic() - started, 3),
        **facts,
    )
    return exit_code


def _log_stream(command: str) -> TextIO:
    """Commands whose stdout is a report log to stderr, from the first byte."""
    module = COMMANDS.get(command)
    return sys.stderr if getattr(module, "WRITES_STDOUT", False) else sys.stdout


def _asked_log_format(argv: list[str]) -> str | None:
    """--log-format or LOG_FORMAT as given, for the errors found before they are parsed."""
    for i, arg in enumerate(argv):
        if arg.startswith("--log-format="):
            return arg.partition("=")[2]
        if arg == "--log-format" and i + 1 < len(argv):
            return argv[i + 1]
    return os.environ.get("LOG_FORMAT")


def _fallback_logging(command: str, fmt: object) -> None:
    """Logging before the configuration is known (or when it is invalid): the asked format if it
    is a valid one, on the stream the command logs to."""
    stream = _log_stream(command)
    if fmt not in config_module.LOG_FORMATS:
        fmt = "console" if stream.isatty() else "json"
    logging_setup.configure(fmt=str(fmt), level="info", command=command, stream=stream)


def _fail(started: float, exc: JobError, *, traceback: bool) -> int:
    if traceback:
        logging_setup.get_logger().debug("job.failed", error=exc.message, exc_info=True)
    facts = {k: v for k, v in exc.facts.items() if k not in ("error", "error_code")}
    outcome = "stopped" if isinstance(exc, Stopped) else "failed"
    return _finish(started, outcome, exc.exit_code, error_code=exc.error_code, error=exc.message, **facts)


def main(argv: Sequence[str] | None = None) -> int:
    stop.under_init()
    stop.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    logging_setup.remember_secrets(argv)
    with logging_setup.redacted_output():
        try:
            return _main(argv)
        except Exception:  # a bug before logging was set up: its traceback is redacted too
            print_exc()
            return 1


def _main(argv: list[str]) -> int:
    started = time.monotonic()
    asked_format = _asked_log_format(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _fallback_logging(next((a for a in argv if a in COMMANDS), "?"), asked_format)
        return _fail(started, exc, traceback=False)
    command: str = args.command
    module: ModuleType = args.module
    try:
        config = config_module.load(vars(args))
        config_module.require_settings(
            vars(args), database=command in USES_DATABASE, store=command in NEEDS_STORE
        )
    except UsageError as exc:
        _fallback_logging(command, asked_format)
        return _fail(started, exc, traceback=False)
    logging_setup.configure(
        fmt=config.log_format, level=config.log_level, command=command, stream=_log_stream(command)
    )
    log = logging_setup.get_logger()
    log.info(
        "job.started",
        version=__version__,
        sqlite_version=sqlite3.sqlite_version,
        python=platform.python_version(),
        db=str(config.db_path),
        pid=os.getpid(),
    )
    debug = config.log_level == "debug"
    try:
        privileges.drop(config, database=command in USES_DATABASE)
        outcome: Outcome = module.run(config, args)
    except JobError as exc:
        return _fail(started, stop.explain(exc), traceback=debug)
    except KeyboardInterrupt:
        return _fail(started, JobError("interrupted"), traceback=False)
    except Exception as exc:
        known = translate(exc)
        if known is not None:
            return _fail(started, stop.explain(known), traceback=debug)
        # Anything else is a bug: show the traceback.
        log.error("job.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        return _finish(
            started, "failed", 1, error_code="internal_error", error=f"{type(exc).__name__}: {exc}"
        )
    late = stop.after_success(outcome.facts, starting=outcome.exec_argv[0] if outcome.exec_argv else None)
    if late is not None:
        return _fail(started, late, traceback=False)
    code = _finish(started, "ok", 0, **outcome.facts)
    if outcome.supervise is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        return outcome.supervise()
    if outcome.exec_argv:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvp(outcome.exec_argv[0], outcome.exec_argv)
        except OSError as exc:
            return start_failed(outcome.exec_argv, exc)
    return code
