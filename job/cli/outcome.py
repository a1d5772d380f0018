"""What a subcommand hands back to the CLI: the run's key facts, and optionally a program to exec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    facts: dict[str, Any] = field(default_factory=dict)
    exec_argv: list[str] | None = None  # gate: replace this process with the relayer on success
