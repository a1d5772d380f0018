"""What a subcommand hands back to the CLI: the run's key facts, and optionally a program to exec
or to supervise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    facts: dict[str, Any] = field(default_factory=dict)
    exec_argv: list[str] | None = None  # gate: replace this process with the relayer on success
    # gate --supervise: instead of exec, run this after job.finished (it starts exec_argv as a
    # child and returns the exit code of this process)
    supervise: Callable[[], int] | None = None
