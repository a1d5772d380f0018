"""SIGTERM/SIGINT while the job works: stop at the next safe point instead of dying mid-step.

The handler only records the signal. The run's existing safe points notice it: `Deadline.expired()`
and `Deadline.check()` report a requested stop, so everything that honours the deadline (SQLite
progress handlers, backup steps, transfer callbacks, retries) honours a stop too: a migration in
progress is rolled back, no manifest is written for a half-made snapshot, and the CLI logs one
`job.finished` and exits 128+N.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from types import FrameType

from job.errors import DeadlineExceeded, JobError, Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: int | None = None


def _record(signum: int, _frame: FrameType | None) -> None:
    global _received  # noqa: PLW0603 -- the one piece of state a signal handler may touch
    if _received is None:
        _received = signum


def under_init() -> None:
    """Never stay PID 1: the kernel drops signals PID 1 does not handle, so the relayer that
    `gate` execs would ignore SIGTERM and every stop would wait for SIGKILL. The image's
    ENTRYPOINT is tini; if a platform starts relayer-job itself as PID 1 anyway (an entrypoint
    override), re-execute under tini when it is installed."""
    tini = shutil.which("tini") if os.getpid() == 1 else None
    if tini is not None:
        os.execv(tini, [tini, "--", *sys.orig_argv])


def install() -> None:
    """Handle SIGTERM and SIGINT from now on (Python's default SIGINT would raise anywhere)."""
    for signum in SIGNALS:
        signal.signal(signum, _record)


def requested() -> bool:
    return _received is not None


def _name() -> str:
    return signal.Signals(_received).name if _received is not None else "a signal"


def check(doing: str) -> None:
    """Raise Stopped if a stop was requested, before `doing`."""
    if _received is not None:
        raise Stopped(
            f"stopped by {_name()} while {doing}; nothing half-done was kept, the next run "
            "picks up from here",
            _received,
        )


def explain(exc: JobError) -> JobError:
    """The error to report: a failure that only happened because a stop interrupted a step
    (SQLite interrupts and deadline checks see a stop as an expired deadline) is the stop."""
    if _received is None or not isinstance(exc, DeadlineExceeded):
        return exc
    return Stopped(
        f"stopped by {_name()} before the run finished; the step in progress was rolled back "
        "and nothing half-done was kept, the next run picks up from here",
        _received,
        **exc.facts,
    )


def after_success(facts: dict[str, object], *, starting: str | None) -> Stopped | None:
    """A stop that arrived after the last safe point: the work is done, but the run still ends
    as stopped (128+N), and a command that `gate` would start is not started."""
    if _received is None:
        return None
    tail = f"; {starting} was not started" if starting else ""
    return Stopped(f"stopped by {_name()} after the work completed{tail}", _received, **facts)
