"""Just enough SQL lexing to split migration files, lint them, and compare SQL text by tokens.

Comparing tokens rather than raw text means whitespace, comments and keyword case do not count:
databases in the field were created from differently formatted SQL.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<op><>|<=|>=|==|!=|\|\||<<|>>|.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line of the statement's first token in its file
    words: tuple[str, ...]  # leading normalised tokens, for linting


def tokens(sql: str) -> list[str]:
    """Normalised tokens: comments and whitespace dropped, identifiers and keywords upper-cased,
    quoted identifiers unquoted, string literals kept exactly."""
    out = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind in ("space", "comment"):
            continue
        if kind == "quoted":
            text = text[1:-1] if len(text) >= 2 else text
        if kind in ("word", "quoted"):
            text = text.upper()
        out.append(text)
    return out


def split_statements(sql: str) -> list[Statement]:
    """Split a script into single statements; trigger bodies (BEGIN ... END) stay whole because
    sqlite3.complete_statement decides where a statement really ends."""
    statements: list[Statement] = []
    start = 0
    for match in _TOKEN.finditer(sql):
        if match.group() != ";" or match.lastgroup != "op":
            continue
        chunk = sql[start : match.end()]
        if sqlite3.complete_statement(chunk):
            _append(statements, sql, start, chunk)
            start = match.end()
    _append(statements, sql, start, sql[start:])
    return statements


def _append(statements: list[Statement], sql: str, start: int, chunk: str) -> None:
    words = tokens(chunk)
    if not words or words == [";"]:
        return
    first = next(m for m in _TOKEN.finditer(chunk) if m.lastgroup not in ("space", "comment"))
    line = sql.count("\n", 0, start + first.start()) + 1
    statements.append(Statement(chunk.strip(), line, tuple(words[:4])))


def strip_if_not_exists(words: list[str]) -> list[str]:
    """CREATE ... IF NOT EXISTS x and CREATE ... x define the same object."""
    out: list[str] = []
    for word in words:
        out.append(word)
        if out[-3:] == ["IF", "NOT", "EXISTS"]:
            del out[-3:]
    return out
