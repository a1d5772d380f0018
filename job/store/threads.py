"""An executor for s3transfer whose threads are daemons.

A transfer abandoned at the deadline (a peer that stopped answering mid-body) stays blocked in a
socket read until its timeout. concurrent.futures' threads are joined when the interpreter exits,
so they would hold the finished run open for that long; daemon threads do not.
"""

from __future__ import annotations

import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from s3transfer.futures import BaseExecutor

Work = tuple[Future[Any], Callable[[], Any], contextvars.Context]


class DaemonExecutor(BaseExecutor):
    def __init__(self, max_workers: int | None = None) -> None:
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name="s3-transfer", daemon=True)
            for _ in range(max_workers or 1)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        # The log context (run_id, command) goes along with the work.
        self._queue.put((future, functools.partial(fn, *args, **kwargs), contextvars.copy_context()))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call, context = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(context.run(call))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
