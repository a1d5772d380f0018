"""The migration files: discovery, validation and lint, before anything touches a database.

Files are `NNN_description.sql`, applied in numeric order, which must equal the file-name order the
relayer's own runner uses. A file may not manage transactions itself: the runner wraps each file in
one transaction together with its ledger row, and these statements would break or escape it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from job.errors import UsageError
from job.sqltext import Statement, split_statements

NAME = re.compile(r"^(?P<number>\d+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")

_FORBIDDEN_FIRST_WORDS = {
    "BEGIN": "BEGIN",
    "COMMIT": "COMMIT",
    "END": "END TRANSACTION",
    "ROLLBACK": "ROLLBACK",
    "SAVEPOINT": "SAVEPOINT",
    "RELEASE": "RELEASE (SAVEPOINT)",
    "VACUUM": "VACUUM",
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
}
_FORBIDDEN_PRAGMAS = {"FOREIGN_KEYS", "JOURNAL_MODE"}


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # the file name: the key of the relayer's ledger
    path: Path
    checksum: str  # SHA-256 hex of the file's bytes
    statements: tuple[Statement, ...]


def checksum_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def line_ending_variants(data: bytes) -> set[str]:
    """Checksums of the same text with LF and with CRLF line endings."""
    lf = data.replace(b"\r\n", b"\n")
    return {checksum_of(lf), checksum_of(lf.replace(b"\n", b"\r\n"))}


def _forbidden(statement: Statement) -> str | None:
    words = [w for w in statement.words if w != ";"]
    if not words:
        return None
    if words[0] in _FORBIDDEN_FIRST_WORDS:
        return _FORBIDDEN_FIRST_WORDS[words[0]]
    if words[0] == "PRAGMA" and len(words) > 1:
        name = words[3] if len(words) > 3 and words[2] == "." else words[1]
        if name in _FORBIDDEN_PRAGMAS:
            return f"PRAGMA {name.lower()}"
    return None


def _load(path: Path, number: int) -> Migration:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        raise UsageError(f"{path}: starts with a UTF-8 byte-order mark; save it without a BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path} line {line}: not valid UTF-8; save the file as UTF-8") from None
    statements = tuple(split_statements(text))
    for statement in statements:
        what = _forbidden(statement)
        if what:
            raise UsageError(
                f"{path} line {statement.line}: {what} is not allowed in a migration: each file "
                "already runs in one transaction with its ledger row, and this would break it"
            )
    return Migration(number, path.name, path, checksum_of(data), statements)


def discover(directory: Path) -> list[Migration]:
    """All migrations in `directory`, validated and in order, or UsageError naming the bad file."""
    if not directory.is_dir():
        raise UsageError(f"--migrations / MIGRATIONS_DIR: {directory} is not a directory of migration files")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".sql" and p.is_file())
    numbered: dict[int, Path] = {}
    widths: dict[int, str] = {}
    for path in files:
        match = NAME.match(path.name)
        if match is None:
            raise UsageError(
                f"{path}: migration files must be named NNN_description.sql (e.g. 005_add_x.sql)"
            )
        digits = match["number"]
        number = int(digits)
        if number in numbered:
            raise UsageError(
                f"{path}: number {digits} is also used by {numbered[number].name}; "
                "every migration needs its own number"
            )
        widths.setdefault(len(digits), path.name)
        numbered[number] = path
    if len(widths) > 1:
        examples = ", ".join(sorted(widths.values()))
        raise UsageError(
            f"{directory}: migration numbers have different widths ({examples}); pad them to the "
            "same number of digits so that numeric order equals the relayer's file-name order"
        )
    if not numbered:
        raise UsageError(f"--migrations / MIGRATIONS_DIR: no *.sql migrations in {directory}")
    return [_load(numbered[n], n) for n in sorted(numbered)]
