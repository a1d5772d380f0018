"""The schema the migration files build: replayed on an empty in-memory database, prefix by prefix.

Drift detection, adoption and `migrations compare` all ask the same question, "what schema do the
first k files build?", so they share one lazy replay.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from job import database
from job.deadline import Deadline
from job.errors import DatabaseProblem, DeadlineExceeded
from job.log import get_logger
from job.migrations import Migration, discover
from job.schema import Schema, describe, differences


class Replay:
    """The schema after each prefix of the migrations, replayed on an empty in-memory database,
    lazily: schema(k) is the schema once the first k files are applied, None if one of them fails
    even on an empty database. Lazy, so that checking a database replays only what it needs."""

    def __init__(self, migrations: Sequence[Migration], deadline: Deadline | None = None) -> None:
        self.migrations = migrations
        self.deadline = deadline
        self.conn = database.connect(":memory:")
        self.conn.execute("PRAGMA foreign_keys = OFF")  # as the runner applies them
        if deadline is not None:
            self.conn.set_progress_handler(lambda: int(deadline.expired()), 10_000)
        self.schemas: list[Schema] = [describe(self.conn)]
        self.failure: str | None = None  # why the first broken file fails on an empty database

    def schema(self, count: int) -> Schema | None:
        while len(self.schemas) <= min(count, len(self.migrations)) and self.failure is None:
            migration = self.migrations[len(self.schemas) - 1]
            for statement in migration.statements:
                try:
                    self.conn.execute(statement.sql)
                except sqlite3.Error as exc:
                    if self.deadline is not None and self.deadline.expired():
                        raise DeadlineExceeded("deadline exceeded while replaying the migrations") from exc
                    self.failure = f"{migration.name} line {statement.line} fails on an empty database: {exc}"
                    break
            else:
                self.schemas.append(describe(self.conn))
        return self.schemas[count] if count < len(self.schemas) else None

    def replayable(self) -> list[Schema]:
        """Every prefix schema that replays."""
        self.schema(len(self.migrations))
        return self.schemas

    def close(self) -> None:
        self.conn.close()


def version_label(migrations: Sequence[Migration], count: int) -> str:
    return migrations[count - 1].name if count else "empty (no migration applied)"


def compare_directories(first: Path, second: Path, deadline: Deadline | None = None) -> list[str]:
    """Every difference, version by version, between what two migration directories build: file
    names, and the schema after each file. Empty when a database migrated from either is the same
    to the drift check and to the relayer's ledger."""
    left = discover(first, deadline, source="migrations compare DIR_A")
    right = discover(second, deadline, source="migrations compare DIR_B")
    replays = Replay(left, deadline), Replay(right, deadline)
    found: list[str] = []
    try:
        for version in range(1, max(len(left), len(right)) + 1):
            names = [m[version - 1].name if version <= len(m) else None for m in (left, right)]
            if None in names:
                where, name = (first, names[0]) if names[1] is None else (second, names[1])
                found.append(f"version {version}: only {where} has {name}")
                continue
            if names[0] != names[1]:
                found.append(
                    f"version {version}: file names differ: {names[0]} in {first}, {names[1]} in {second}"
                )
            schemas = [replay.schema(version) for replay in replays]
            for replay, directory, schema in zip(replays, (first, second), schemas, strict=True):
                if schema is None:
                    found.append(f"version {version}: {directory}: {replay.failure}")
            if None in schemas:
                break
            diff = differences(schemas[0] or {}, schemas[1] or {}, extra="only here")
            for obj, items in diff.items():
                found.append(
                    f"version {version} ({names[0]}): {obj}: {'; '.join(items)} "
                    f"(in {first}, compared with {second})"
                )
    finally:
        for replay in replays:
            replay.close()
    return found


def require_same(first: Path, second: Path, deadline: Deadline) -> None:
    """`migrations compare`: DatabaseProblem (exit 5) listing every difference, if any."""
    found = compare_directories(first, second, deadline)
    log = get_logger()
    for difference in found:
        log.error("migrations.differ", difference=difference)
    if found:
        raise DatabaseProblem(
            f"{first} and {second} build different schemas ({len(found)} difference"
            f"{'s' if len(found) > 1 else ''}): {found[0]}",
            differences=found,
        )
    log.info("migrations.same", first=str(first), second=str(second))
