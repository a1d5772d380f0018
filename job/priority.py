"""Low CPU and I/O priority for the calling thread, so that background snapshots yield to the relayer.

On Linux both priorities belong to a thread, not to the process: lowering them in the supervisor's
snapshot thread leaves its main thread (which forwards signals) and the relayer (started from the
main thread) untouched, while every thread the snapshot starts (zstd workers, transfers) inherits
them. Best effort: where a call is not available, the snapshot runs at normal priority.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

NICE = 10
IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "riscv64": 30, "armv7l": 314, "i686": 289, "ppc64le": 273}
IOPRIO_WHO_PROCESS = 1  # a thread id, on Linux
IOPRIO_CLASS_BE, IOPRIO_CLASS_SHIFT, IOPRIO_LOWEST_LEVEL = 2, 13, 7


def nice_of_this_thread() -> object:
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (OSError, AttributeError) as exc:
        return f"unknown: {exc}"


_this_thread = threading.local()


def lower_this_thread() -> dict[str, object]:
    """Nice +NICE and best-effort I/O priority 7 (the lowest that still gets a share) for the
    calling thread; what was applied, for the log. Once per thread: a pool thread that runs a
    second task is not lowered again."""
    if getattr(_this_thread, "lowered", None) is not None:
        return dict(_this_thread.lowered)
    _this_thread.lowered = applied = _lower()
    return dict(applied)


def _lower() -> dict[str, object]:
    tid = threading.get_native_id()
    applied: dict[str, object] = {}
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
        applied["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
    except (OSError, AttributeError) as exc:
        applied["nice"] = f"unchanged: {exc}"
    number = IOPRIO_SET.get(platform.machine())
    if number is None:
        applied["ioprio"] = f"unchanged: no ioprio_set for {platform.machine()}"
        return applied
    libc = ctypes.CDLL(None, use_errno=True)
    value = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | IOPRIO_LOWEST_LEVEL
    if libc.syscall(number, IOPRIO_WHO_PROCESS, tid, value) == 0:
        applied["ioprio"] = f"best-effort {IOPRIO_LOWEST_LEVEL}"
    else:
        applied["ioprio"] = f"unchanged: {os.strerror(ctypes.get_errno())}"
    return applied
