"""The job's exceptions. Each carries the documented exit code; the CLI maps them in one place.

Exit codes (stable; documented in README.md):
0 success · 1 unexpected internal error · 2 usage or configuration error · 3 lock not acquired ·
4 environment refused · 5 database problem · 6 object store failure · 7 migration failed and rolled
back · 8 verification failed · 9 deadline exceeded.
"""

from __future__ import annotations

from typing import ClassVar


class JobError(Exception):
    """Base class: a failure the job understands and can explain in one line."""

    exit_code: ClassVar[int] = 1
    error_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts


class UsageError(JobError):
    exit_code = 2
    error_code = "usage_error"


class LockTimeout(JobError):
    exit_code = 3
    error_code = "lock_timeout"


class EnvironmentRefused(JobError):
    exit_code = 4
    error_code = "environment_refused"


class DatabaseProblem(JobError):
    exit_code = 5
    error_code = "database_problem"


class StoreError(JobError):
    exit_code = 6
    error_code = "store_error"


class MigrationFailed(JobError):
    exit_code = 7
    error_code = "migration_failed"


class VerificationFailed(JobError):
    exit_code = 8
    error_code = "verification_failed"


class DeadlineExceeded(JobError):
    exit_code = 9
    error_code = "deadline_exceeded"
