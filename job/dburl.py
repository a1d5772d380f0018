"""Where the relayer's database is: DATABASE_PATH, else DATABASE_URL, resolved exactly as the relayer
resolves them, so that the job always works on the file the relayer opens.

The relayer (facts/relayer.md) removes every leading `sqlite:` from DATABASE_URL and nothing else
(`sqlite://data/relayer.db` becomes `//data/relayer.db`, an absolute path), then opens the result with
rusqlite, URI filenames enabled: a `file:` name is a SQLite URI, anything else a plain path (a `?` in
it is part of the file name). A URI whose options would make SQLite open something other than that
file the normal way (read-only, in memory, another VFS, no locking) is refused rather than guessed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from job.errors import UsageError

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
# Allowed values of the options that change what is opened or how (SQLite compares mode and vfs
# case-sensitively; "RW" is an error for SQLite, so the relayer could not open such a URI).
_ALLOWED_URI_OPTIONS = {
    "mode": {"rw", "rwc"},  # ro and memory are not the relayer's read-write file
    "vfs": {"unix"},
    "immutable": {"0", "false", "no", "off"},
    "nolock": {"0", "false", "no", "off"},
}
_CASE_SENSITIVE = {"mode", "vfs"}


def from_url(url: str, source: str = "DATABASE_URL") -> Path:
    """DATABASE_URL as the relayer reads it."""
    name = url
    while name.startswith("sqlite:"):
        name = name[len("sqlite:") :]
    scheme = _SCHEME.match(name)
    if scheme and scheme["scheme"].lower() != "file":
        raise UsageError(
            f"{source}: the {scheme['scheme']!r} scheme is not a SQLite database; the relayer only "
            "uses sqlite:PATH (or a plain path); set DATABASE_PATH to the database file"
        )
    if name.startswith("//") and "@" in name[2:].split("/", 1)[0]:
        raise UsageError(
            f"{source}: looks like a server address with credentials (sqlite://user:password@host/...), "
            "not a file; SQLite has no server: set DATABASE_PATH to the database file"
        )
    return from_name(name, source)


def from_name(name: str, source: str) -> Path:
    """A SQLite file name as rusqlite opens it (DATABASE_PATH, --db, or DATABASE_URL's rest)."""
    if name.startswith("file:"):
        return _from_uri(name, source)
    if name.strip() in ("", ":memory:"):
        raise UsageError(
            f"{source}: {name!r} is not a database file (SQLite would open a temporary or in-memory "
            "database that is lost on restart); give the path of relayer.db"
        )
    if "\0" in name:
        raise UsageError(f"{source}: the path contains a NUL character; give the path of relayer.db")
    return _path(name)


def _from_uri(uri: str, source: str) -> Path:
    rest = uri[len("file:") :].split("#", 1)[0]
    rest, _, query = rest.partition("?")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            raise UsageError(
                f"{source}: the SQLite URI names a host; use file:/ABSOLUTE/PATH or file:RELATIVE/PATH"
            )
        rest = slash + path
    for key, value in parse_qsl(query, keep_blank_values=True):
        allowed = _ALLOWED_URI_OPTIONS.get(key)
        if allowed is not None and (value if key in _CASE_SENSITIVE else value.lower()) not in allowed:
            raise UsageError(
                f"{source}: the SQLite URI option {key}={value} does not open the database file "
                "read-write the normal way; the job refuses to guess what the relayer sees: remove it"
            )
    path = unquote(rest)
    if path.strip() == "" or path == ":memory:":
        raise UsageError(f"{source}: the SQLite URI names no database file")
    if "\0" in path:
        raise UsageError(
            f"{source}: the SQLite URI's path contains %00, where SQLite stops reading it; remove it"
        )
    return _path(path)


def _path(name: str) -> Path:
    # POSIX lets exactly two leading slashes mean something else; Linux (and SQLite) treat them as one.
    return Path(re.sub(r"^/{2,}", "/", name))
