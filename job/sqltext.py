"""Just enough SQL lexing to split migration files, lint them, and compare SQL text by tokens.

The lexing follows SQLite's own rules (tokenize.c, complete.c) rather than a plausible subset:
the lint must see a statement the way SQLite will run it, whatever the quoting, case, spacing or
comments. Splitting is one linear pass, so that a large file cannot stall the job.

Comparing tokens rather than raw text means whitespace, comments and keyword case do not count:
databases in the field were created from differently formatted SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

_ID = "A-Za-z0-9_$\u0080-\U0010ffff"  # SQLite: every byte >= 0x80 is an identifier character
_SPACE = " \t\n\f\r"

_TOKEN = re.compile(
    rf"""
    (?P<space>[{_SPACE}]+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][{_ID}]*)
  | (?P<variable>\?[0-9]*|[:@$#][{_ID}]+)
  | (?P<number>(?:0[xX][0-9A-Fa-f]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)[{_ID}]*)
  | (?P<op><>|<=|>=|==|!=|\|\||<<|>>|->>|->|.)
    """,
    re.VERBOSE | re.DOTALL,
)

# sqlite3_complete()'s own tokens (complete.c): only these decide where a statement ends.
_COMPLETE_TOKEN = re.compile(
    rf"""
    (?P<ws>[{_SPACE}]+|--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<semi>;)
  | (?P<id>[{_ID}]+)
  | (?P<other>'[^']*'?|"[^"]*"?|`[^`]*`?|\[[^\]]*\]?|.)
    """,
    re.VERBOSE | re.DOTALL,
)
# Everything up to the next `;` that is outside strings, quoted names and comments, in one match.
_UNTIL_SEMICOLON = re.compile(
    r"""(?:[^;'"`\[/-]++|'[^']*+'?|"[^"]*+"?|`[^`]*+`?|\[[^\]]*+\]?|--[^\n]*+|/\*.*?(?:\*/|\Z)|[/-])*+""",
    re.DOTALL,
)

# complete.c's state machine. Tokens and states are its own; a statement ends at a `;` that
# leads to START (inside CREATE TRIGGER ... BEGIN ... END, only `; END ;` does).
_SEMI, _WS, _OTHER, _EXPLAIN, _CREATE, _TEMP, _TRIGGER, _END = range(8)
_INVALID, _START, _NORMAL, _IN_EXPLAIN, _IN_CREATE, _IN_TRIGGER, _AFTER_SEMI, _AFTER_END = range(8)
_TRANSITIONS = (  # [state][token] -> next state
    (1, 0, 2, 3, 4, 2, 2, 2),
    (1, 1, 2, 3, 4, 2, 2, 2),
    (1, 2, 2, 2, 2, 2, 2, 2),
    (1, 3, 3, 2, 4, 2, 2, 2),
    (1, 4, 2, 2, 2, 4, 5, 2),
    (6, 5, 5, 5, 5, 5, 5, 5),
    (6, 6, 5, 5, 5, 5, 5, 7),
    (1, 7, 5, 5, 5, 5, 5, 5),
)
_COMPLETE_KEYWORDS = {
    "EXPLAIN": _EXPLAIN,
    "CREATE": _CREATE,
    "TEMP": _TEMP,
    "TEMPORARY": _TEMP,
    "TRIGGER": _TRIGGER,
    "END": _END,
}
CHECK_EVERY = 1024  # steps of the splitting pass between two calls of its `check`


class Token(NamedTuple):
    kind: str  # word (a bare keyword or name), quoted, string, number, variable or op
    text: str  # names and strings unquoted; words, names and strings upper-cased (ASCII only)


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line of the statement's first token in its file


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def ascii_upper(text: str) -> str:
    """SQLite folds case in ASCII only, unlike str.upper() (which maps the long s to 'S')."""
    return text.translate(_UPPER)


def unquote(text: str) -> str:
    """A quoted name or string without its quotes ('x', "x", `x`, [x]), doubled quotes undone."""
    if text[:1] == "[":
        return text[1:-1] if text.endswith("]") and len(text) >= 2 else text[1:]
    quote = text[:1]
    inner = text[1:-1] if len(text) >= 2 and text.endswith(quote) else text[1:]
    return inner.replace(quote * 2, quote)


def typed_tokens(sql: str) -> list[Token]:
    """Normalised tokens with their kind: comments and whitespace dropped, identifiers and keywords
    upper-cased, quoted identifiers unquoted, string literals kept exactly."""
    out = []
    for match in _TOKEN.finditer(sql):
        kind, text = str(match.lastgroup), match.group()
        if kind in ("space", "comment"):
            continue
        if kind == "quoted":
            text = text[1:-1] if len(text) >= 2 else text
        if kind in ("word", "quoted"):
            text = text.upper()
        out.append(Token(kind, text))
    return out


def tokens(sql: str) -> list[str]:
    """The text of typed_tokens(sql)."""
    return [token.text for token in typed_tokens(sql)]


def lint_tokens(sql: str) -> Iterator[Token]:
    """The statement's tokens as SQLite reads them, comments and whitespace dropped, lazily: the
    lint judges a statement by its first few."""
    for match in _TOKEN.finditer(sql):
        kind, text = str(match.lastgroup), match.group()
        if kind in ("space", "comment"):
            continue
        if kind in ("quoted", "string"):
            text = unquote(text)
        if kind in ("word", "quoted", "string"):
            text = ascii_upper(text)
        yield Token(kind, text)


def _complete_token(match: re.Match[str]) -> int:
    kind = match.lastgroup
    if kind == "ws":
        return _WS
    if kind == "semi":
        return _SEMI
    text = match.group()
    if kind == "id" and text.isascii():
        return _COMPLETE_KEYWORDS.get(text.upper(), _OTHER)
    return _OTHER


def split_statements(sql: str, check: Callable[[], None] | None = None) -> Iterator[Statement]:
    """Split a script into single statements exactly where sqlite3_complete() would (trigger
    bodies stay whole), in one linear pass; `check` is called now and then (a deadline)."""
    start = position = steps = 0
    first: int | None = None  # offset of the current statement's first token
    state = _START
    lines = _LineCounter(sql)
    size = len(sql)
    while position < size:
        steps += 1
        if check is not None and steps % CHECK_EVERY == 0:
            check()
        if state in (_NORMAL, _IN_TRIGGER):  # only a `;` can change these states
            until = _UNTIL_SEMICOLON.match(sql, position)
            assert until is not None  # it matches the empty string too
            position = until.end()
            if position >= size:
                break
            token, position = _SEMI, position + 1
        else:
            match = _COMPLETE_TOKEN.match(sql, position)
            assert match is not None  # `.` matches any character
            token, position = _complete_token(match), match.end()
            if first is None and token not in (_WS, _SEMI):
                first = match.start()
        state = _TRANSITIONS[state][token]
        if token == _SEMI and state == _START:
            if first is not None:
                yield Statement(sql[start:position].strip(_SPACE), lines.at(first))
            start, first = position, None
    if first is not None:
        yield Statement(sql[start:].strip(_SPACE), lines.at(first))


class _LineCounter:
    """Line numbers of increasing offsets, counting each newline once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.line = 1

    def at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def strip_if_not_exists(words: list[str]) -> list[str]:
    """CREATE ... IF NOT EXISTS x and CREATE ... x define the same object."""
    out: list[str] = []
    for word in words:
        out.append(word)
        if out[-3:] == ["IF", "NOT", "EXISTS"]:
            del out[-3:]
    return out
