"""Option groups shared by several subcommands. Defaults live in job.config, not here: a flag that
is not given is absent, so that the environment and then the default apply."""

from __future__ import annotations

import argparse

from job.manifest import parse_choice


def common() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = parser.add_argument_group("database and run")
    group.add_argument(
        "--db", metavar="PATH", help="database file [DATABASE_PATH, DATABASE_URL] (default ./data/relayer.db)"
    )
    group.add_argument("--migrations", metavar="DIR", help="migration files [MIGRATIONS_DIR]")
    group.add_argument("--lock-file", metavar="PATH", help="disk lock file [JOB_LOCK_FILE]")
    group.add_argument("--lock-timeout", metavar="S", help="seconds to wait for the lock [JOB_LOCK_TIMEOUT]")
    group.add_argument("--deadline", metavar="S", help="total time limit in seconds [JOB_DEADLINE]")
    group.add_argument("--log-format", metavar="json|console", help="[LOG_FORMAT]")
    group.add_argument("--log-level", metavar="LEVEL", help="debug|info|warning|error [LOG_LEVEL]")
    group.add_argument(
        "--allow-network-fs",
        action="store_true",
        help="accept a database on NFS/CIFS/FUSE (SQLite locking is unreliable there)",
    )
    return parser


def store() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = parser.add_argument_group("snapshot store")
    group.add_argument(
        "--store",
        metavar="URL",
        help="s3://BUCKET/PREFIX or file:///PATH (default file:./snapshots) [SNAPSHOT_STORE]",
    )
    group.add_argument("--s3-addressing-style", metavar="auto|path|virtual", help="[S3_ADDRESSING_STYLE]")
    group.add_argument(
        "--s3-checksum-mode",
        metavar="when_supported|when_required",
        help="when_required for stores that reject boto3's default checksums [S3_CHECKSUM_MODE]",
    )
    group.add_argument("--s3-sse", metavar="AES256|aws:kms", help="server-side encryption [S3_SSE]")
    group.add_argument("--s3-sse-kms-key-id", metavar="ID", help="[S3_SSE_KMS_KEY_ID]")
    group.add_argument("--s3-storage-class", metavar="CLASS", help="[S3_STORAGE_CLASS]")
    group.add_argument(
        "--s3-part-size-mb", metavar="MB", help="multipart part size, 5..5120 (default 8) [S3_PART_SIZE_MB]"
    )
    return parser


def add_disk(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disk",
        metavar="PATH",
        help="refuse unless PATH is a mounted disk holding the database [DISK_MOUNT_PATH]",
    )


def add_allow_drift(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-drift",
        action="store_true",
        help="go on for this run even if the live schema differs from the migrations' (exit 5 "
        "otherwise; 'schema accept' records a known difference for good) [ALLOW_DRIFT]",
    )


def add_allow_new_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-new-database",
        action="store_true",
        help="create (or adopt) a new, empty database even though the store holds snapshots "
        "[ALLOW_NEW_DATABASE]",
    )


def add_snapshot_choice(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument(
        "which",
        nargs="?",
        default="latest",
        metavar="ID|latest|before:TIME",
        type=lambda raw: parse_choice(raw, f"{parser.prog} ID|latest"),
        help=f"the snapshot to {purpose}: an id (see 'snapshots list'), latest (the default) or "
        "before:TIME (the newest taken strictly before TIME, e.g. before:2026-11-28T09:00Z)",
    )
