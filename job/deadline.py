"""One deadline for the whole run, so that retries and slow steps cannot outlive Render's timeouts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from job import stop
from job.errors import DeadlineExceeded


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def expired(self) -> bool:
        """Out of time, or asked to stop (SIGTERM/SIGINT): either way, stop at this safe point."""
        return stop.requested() or self.remaining() <= 0

    def check(self, doing: str) -> None:
        """Raise Stopped (exit 128+N) if asked to stop, DeadlineExceeded (exit 9) if the run is
        out of time, before `doing`."""
        stop.check(doing)
        if self.expired():
            raise DeadlineExceeded(
                f"deadline of {self.seconds:g}s exceeded while {doing}; "
                "raise --deadline / JOB_DEADLINE if the database or the store is slow"
            )
