"""One deadline for the whole run, so that retries and slow steps cannot outlive Render's timeouts."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import TypeVar

from job import stop
from job.errors import DeadlineExceeded

T = TypeVar("T")


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def expired(self) -> bool:
        """Out of time, or asked to stop (SIGTERM/SIGINT): either way, stop at this safe point."""
        return stop.requested() or self.remaining() <= 0

    def exceeded(self, doing: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"deadline of {self.seconds:g}s exceeded while {doing}; "
            "raise --deadline / JOB_DEADLINE if the database or the store is slow"
        )

    def check(self, doing: str) -> None:
        """Raise Stopped (exit 128+N) if asked to stop, DeadlineExceeded (exit 9) if the run is
        out of time, before `doing`."""
        stop.check(doing)
        if self.expired():
            raise self.exceeded(doing)

    def bound(self, fn: Callable[[], T], doing: str) -> T:
        """Run `fn` (network I/O) and give up on it when the deadline passes. A read from a peer
        that never answers cannot be interrupted, so `fn` runs in a daemon thread that is left
        behind: it can neither hold the run past its deadline nor keep the process from exiting."""
        self.check(doing)
        outcome: Future[T] = Future()
        context = contextvars.copy_context()  # the log context (run_id, command) goes along

        def work() -> None:
            try:
                outcome.set_result(context.run(fn))
            except BaseException as exc:
                outcome.set_exception(exc)

        threading.Thread(target=work, name=f"bound: {doing}"[:60], daemon=True).start()
        if not wait([outcome], timeout=max(self.remaining(), 0)).done:
            raise self.exceeded(doing)
        return outcome.result()
