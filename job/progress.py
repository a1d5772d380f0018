"""Progress events for long phases (copy, compression, upload), at most one every few seconds."""

from __future__ import annotations

import time

from job.log import get_logger

EVERY_S = 5.0


class Progress:
    def __init__(self, event: str, total: int, every_s: float = EVERY_S) -> None:
        self.event, self.total, self.every_s = event, total, every_s
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        get_logger().info(
            self.event,
            bytes_done=done,
            bytes_total=self.total,
            percent=round(100 * done / self.total, 1) if self.total else None,
            rate_mb_s=round(done / elapsed / 1e6, 1),
        )
