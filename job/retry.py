"""How the job retries object-store calls: botocore per HTTP request, tenacity per operation.

The layers multiply, so they split the work deliberately:
- botocore (`standard` mode, 3 attempts per request) retries what it can see cheaply: 5xx,
  throttling (SlowDown), RequestTimeout, connection errors and timeouts, each multipart part on its
  own, without restarting a large upload.
- tenacity (up to 4 attempts per store operation, jittered exponential backoff 1 s .. 20 s) retries
  what botocore cannot: a response body cut off mid-read, an operation whose requests all failed.
  It never waits past the run's deadline, and it logs every retry.
- Permanent errors (bad credentials, missing bucket, access denied, 4xx) are not retried at all.
Worst case: 3 x 4 = 12 requests for one operation, all inside the deadline, which is hard: no
request starts after it, none waits longer than the time left, and an operation still on the network
when it passes is abandoned (job.store.s3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from job.deadline import Deadline
from job.errors import DeadlineExceeded
from job.log import get_logger

T = TypeVar("T")

BOTOCORE_ATTEMPTS = 3
OPERATION_ATTEMPTS = 4
WAIT_MIN_S, WAIT_MAX_S = 1.0, 20.0


def call(
    operation: str,
    fn: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    deadline: Deadline,
    attempts: int = OPERATION_ATTEMPTS,
) -> T:
    """Run `fn`, retrying transient failures with backoff inside the deadline; re-raise the last
    error once attempts or time run out."""
    log = get_logger()

    class out_of_time(stop_base):
        def __call__(self, state: RetryCallState) -> bool:
            return (state.upcoming_sleep or 0) >= deadline.remaining()

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "store.retrying",
            operation=operation,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
            error=f"{type(error).__name__}: {error}",
        )

    retrying = Retrying(
        retry=retry_if_exception(transient),
        stop=stop_any(stop_after_attempt(attempts), out_of_time()),
        wait=wait_random_exponential(multiplier=WAIT_MIN_S, min=WAIT_MIN_S, max=WAIT_MAX_S),
        before_sleep=before_sleep,
        reraise=True,
    )
    deadline.check(operation)
    try:
        return retrying(fn)
    except Exception as exc:
        if deadline.expired() and transient(exc):
            raise DeadlineExceeded(
                f"deadline of {deadline.seconds:g}s exceeded during {operation} "
                f"(last error: {type(exc).__name__}: {exc}); the store is slow or unreachable"
            ) from exc
        raise
