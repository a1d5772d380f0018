"""Run the real CLI and SIGKILL it at a named point of the job, for crash tests that need a precise
moment (a log line read by the test arrives too late: the job has gone on by then).

    python -m tests.support.killpoint MODULE.FUNCTION before|after KEY=VALUE|- -- ARGS...

The named function of the job is wrapped so that the process sends itself SIGKILL just before or
just after it runs (only when its keyword argument KEY equals VALUE, if given). Nothing else is
changed: the job runs as usual up to that point, and the kill is as abrupt as Render's.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def arm(target: str, when: str, condition: str) -> None:
    module_name, _, name = target.rpartition(".")
    module = importlib.import_module(module_name)
    original: Callable[..., Any] = getattr(module, name)
    key, _, value = condition.partition("=")

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = condition == "-" or str(kwargs.get(key)) == value
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)


if __name__ == "__main__":
    target, when, condition, separator, *argv = sys.argv[1:]
    assert when in ("before", "after") and separator == "--", sys.argv
    arm(target, when, condition)
    from job.cli.main import main

    sys.exit(main(argv))
