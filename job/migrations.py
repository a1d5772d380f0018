"""The migration files: discovery, validation and lint, before anything touches a database.

Files are `NNN_description.sql`, applied in numeric order, which must equal the file-name order the
relayer's own runner uses. A file may not manage transactions itself: the runner wraps each file in
one transaction together with its ledger row, and these statements would break or escape it.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from job.deadline import Deadline
from job.errors import UsageError
from job.sqltext import Statement, Token, lint_tokens, split_statements

READ_CHUNK = 1 << 20
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
# Pragmas that escape the file's transaction or defeat its undo, in any form (reading included,
# there is no reason for a migration to touch them):
_FORBIDDEN_PRAGMAS = {
    # the runner owns it; inside the transaction it is silently a no-op
    "FOREIGN_KEYS",
    # OFF/MEMORY inside the transaction: ROLLBACK cannot restore pages already written (a corrupt
    # database); to or from WAL it fails; the relayer expects the mode it chose
    "JOURNAL_MODE",
    # edits sqlite_schema directly: a wrong edit makes the whole database unreadable
    "WRITABLE_SCHEMA",
    # "misuse can result in database corruption" (SQLite docs); other connections miss the change
    "SCHEMA_VERSION",
    # OFF/NORMAL makes this very COMMIT non-durable: a power cut after it can corrupt the file
    "SYNCHRONOUS",
    # EXCLUSIVE outlives the transaction: the database stays locked against the relayer
    "LOCKING_MODE",
}


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


_NAMES = ("word", "quoted", "string")  # the tokens SQLite may read as a name


def forbidden(sql: str) -> str | None:
    """What in this statement a migration may not do, judged as SQLite parses it: keywords in any
    case; a pragma's name (and schema) quoted any way SQLite accepts; comments anywhere between
    tokens; `EXPLAIN` in front changes nothing, since SQLite carries out a pragma while preparing
    it. A quoted first word is a syntax error to SQLite, refused here all the same."""
    words = lint_tokens(sql)
    first = next(words, None)
    while first is not None and first == Token("word", "EXPLAIN"):
        first = next(words, None)
        if first == Token("word", "QUERY"):
            next(words, None)  # PLAN
            first = next(words, None)
    if first is None or first.kind not in _NAMES:
        return None
    if first.text in _FORBIDDEN_FIRST_WORDS:
        return _FORBIDDEN_FIRST_WORDS[first.text]
    if first.text != "PRAGMA":
        return None
    name = _pragma_name(list(itertools.islice(words, 3)))
    return f"PRAGMA {name.lower()}" if name in _FORBIDDEN_PRAGMAS else None


def _pragma_name(tokens: list[Token]) -> str | None:
    """`PRAGMA [schema.]name ...`: names may be words, quoted names or strings."""
    if len(tokens) == 3 and tokens[1] == Token("op", ".") and tokens[2].kind in _NAMES:
        return tokens[2].text
    if tokens and tokens[0].kind in _NAMES:
        return tokens[0].text
    return None


def _read(path: Path, deadline: Deadline | None) -> bytes:
    """The file's bytes, read in chunks so that a huge file cannot outlive the deadline."""
    chunks = []
    with path.open("rb") as file:
        while chunk := file.read(READ_CHUNK):
            if deadline is not None:
                deadline.check(f"reading {path}")
            chunks.append(chunk)
    return b"".join(chunks)


def _load(path: Path, number: int, deadline: Deadline | None) -> Migration:
    data = _read(path, deadline)
    if data.startswith(b"\xef\xbb\xbf"):
        raise UsageError(f"{path}: starts with a UTF-8 byte-order mark; save it without a BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path} line {line}: not valid UTF-8; save the file as UTF-8") from None
    check = None if deadline is None else partial(deadline.check, f"linting {path}")
    statements = []
    for statement in split_statements(text, check):
        what = forbidden(statement.sql)
        if what:
            raise UsageError(
                f"{path} line {statement.line}: {what} is not allowed in a migration: each file "
                "already runs in one transaction with its ledger row, and this would break it"
            )
        statements.append(statement)
    return Migration(number, path.name, path, checksum_of(data), tuple(statements))


def _require_regular_file(path: Path) -> None:
    """The relayer reads every `*.sql` entry and stops at one it cannot read, and the job must not
    skip what the relayer would run: a directory, a dangling symlink or a device is an error."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        target = path.readlink() if path.is_symlink() else "nothing"
        raise UsageError(
            f"{path}: a symlink to {target}, which does not exist; remove it or point it at the "
            "migration file"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read as a migration file ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(
            f"{path}: is {what}; a migration must be a file (remove it or rename it so that its "
            "name does not end in .sql)"
        )


def discover(
    directory: Path, deadline: Deadline | None = None, *, source: str = "--migrations / MIGRATIONS_DIR"
) -> list[Migration]:
    """All migrations in `directory` (`source` names where it was given), validated and in order,
    or UsageError naming the bad file; DeadlineExceeded (exit 9) if reading and linting them
    outlives `deadline`."""
    if not directory.is_dir():
        raise UsageError(f"{source}: {directory} is not a directory of migration files")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".sql")
    numbered: dict[int, Path] = {}
    widths: dict[int, str] = {}
    for path in files:
        _require_regular_file(path)
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
        raise UsageError(f"{source}: no *.sql migrations in {directory}")
    return [_load(numbered[n], n, deadline) for n in sorted(numbered)]
