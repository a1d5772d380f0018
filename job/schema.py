"""A normalised description of a database schema, and the differences between two of them.

Drift detection compares structure (tables, columns with type/notnull/default/pk, indexes, foreign
keys, triggers, views) read with PRAGMAs, plus what only the SQL text says (CHECK constraints,
COLLATE, generated columns, column order, WITHOUT ROWID/STRICT, expression indexes), compared by
tokens, so that whitespace, comments, quoting and keyword case do not count: databases in the field
were created from differently formatted SQL. The migration ledgers and the job's own tables are not
part of the schema.

Differences are reported per item (a column, an index, a constraint, a whole object), each with the
live and the expected description of that item, so that an accepted difference can be matched
item by item (job.acceptance).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from job.sqltext import Token, strip_if_not_exists, tokens, typed_tokens

ACCEPTANCES_TABLE = "_relayer_job_acceptances"
NOT_SCHEMA = frozenset({"_schema_migrations", "_sqlx_migrations", ACCEPTANCES_TABLE})
_TABLE_CONSTRAINTS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}
ORDER, OPTIONS = "(column order)", "(options)"  # item names no column or index can have
_FIELDS = {
    "column": "columns",
    "index": "indexes",
    "foreign key": "foreign_keys",
    "constraint": "constraints",
}

Schema = dict[str, dict[str, Any]]  # object key ("table commands", "view v", ...) -> description


def _words(sql: str | None) -> str:
    return " ".join(strip_if_not_exists(tokens(sql or "")))


def _where_clause(index_sql: str | None) -> str:
    words = tokens(index_sql or "")
    return " ".join(words[words.index("WHERE") + 1 :]) if "WHERE" in words else ""


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _definition_parts(sql: str | None) -> tuple[dict[str, str], list[str], str] | None:
    """A CREATE TABLE statement split by tokens: each column's definition (by upper-cased name),
    the table constraints, and the options after the closing parenthesis (WITHOUT ROWID, STRICT).
    None when the table has no such body (CREATE TABLE ... AS SELECT, virtual tables)."""
    words = typed_tokens(sql or "")
    opening = next((i for i, w in enumerate(words) if w == ("op", "(")), None)
    if opening is None:
        return None
    parts: list[list[Token]] = [[]]
    depth = 0
    end = len(words)
    for i in range(opening + 1, len(words)):
        word = words[i]
        if word == ("op", "("):
            depth += 1
        elif word == ("op", ")"):
            if depth == 0:
                end = i
                break
            depth -= 1
        elif word == ("op", ",") and depth == 0:
            parts.append([])
            continue
        parts[-1].append(word)
    columns: dict[str, str] = {}
    constraints: list[str] = []
    for part in filter(None, parts):
        text = [w.text for w in part]
        if part[0].kind == "word" and part[0].text in _TABLE_CONSTRAINTS:
            constraints.append(" ".join(text))
        else:
            columns[text[0]] = " ".join(text[1:])
    return columns, sorted(constraints), " ".join(w.text for w in words[end + 1 :])


def _table(conn: sqlite3.Connection, name: str, sql: str | None) -> dict[str, Any]:
    quoted = _ident(name)
    parsed = _definition_parts(sql)
    definitions = parsed[0] if parsed else {}
    rows = conn.execute(f'PRAGMA table_xinfo("{quoted}")').fetchall()
    columns = {
        row[1]: {
            "type": " ".join(str(row[2]).upper().split()),
            "notnull": bool(row[3]),
            "default": _words(row[4]) or None,
            "pk": int(row[5]),
            "definition": definitions.get(str(row[1]).upper()),
        }
        for row in rows
    }
    fks: dict[int, dict[str, Any]] = {}
    for fid, _seq, parent, src, dst, on_update, on_delete, match in conn.execute(
        f'PRAGMA foreign_key_list("{quoted}")'
    ):
        fk = fks.setdefault(
            fid,
            {
                "parent": parent.upper(),
                "from": [],
                "to": [],
                "on_update": on_update,
                "on_delete": on_delete,
                "match": match,
            },
        )
        fk["from"].append(src)
        fk["to"].append(dst)
    foreign_keys = sorted(
        f"({', '.join(fk['from'])}) -> {fk['parent']}({', '.join(str(c) for c in fk['to'])}) "
        f"on delete {fk['on_delete']} on update {fk['on_update']}"
        for fk in fks.values()
    )
    sql_of = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    indexes = {}
    for _seq, iname, unique, origin, partial in conn.execute(f'PRAGMA index_list("{quoted}")'):
        cols = [
            f"{r[2] if r[2] is not None else '<expr>'}{' DESC' if r[3] else ''}"
            for r in conn.execute(f'PRAGMA index_xinfo("{_ident(iname)}")')
            if r[5]
        ]
        key = iname if origin == "c" else f"<{origin}>({', '.join(cols)})"
        indexes[key] = {
            "unique": bool(unique),
            "columns": cols,
            "where": _where_clause(sql_of.get(iname)) if partial else "",
            "definition": _words(sql_of.get(iname)) or None,
        }
    return {
        "columns": columns,
        "column_order": [row[1] for row in rows],
        "constraints": parsed[1] if parsed else [],
        "options": parsed[2] if parsed else "",
        "foreign_keys": foreign_keys,
        "indexes": indexes,
    }


def describe(conn: sqlite3.Connection) -> Schema:
    """The schema of `conn`'s main database, ledgers and SQLite's internal tables left out."""
    schema: Schema = {}
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND type IN ('table', 'view', 'trigger') ORDER BY name"
    ).fetchall()
    for kind, name, sql in rows:
        if name in NOT_SCHEMA:
            continue
        if kind == "table":
            schema[f"table {name}"] = _table(conn, name, sql)
        else:
            schema[f"{kind} {name}"] = {"sql": _words(sql)}
    return schema


@dataclass(frozen=True)
class Item:
    """One difference: the object it belongs to, what to say, and both sides' descriptions of the
    item (None where it does not exist)."""

    obj: str
    message: str
    live: Any
    expected: Any


def _changed(live: dict[str, Any], expected: dict[str, Any]) -> str:
    attrs = [a for a in sorted(set(live) | set(expected)) if live.get(a) != expected.get(a)]
    shown = [a for a in attrs if a != "definition"] or attrs  # the definition repeats the rest
    return ", ".join(f"{a} {live.get(a)!r} (expected {expected.get(a)!r})" for a in shown)


def _keyed(
    obj: str, label: str, live: dict[str, Any], expected: dict[str, Any]
) -> Iterator[tuple[str, Item]]:
    for key in sorted(expected.keys() - live.keys()):
        yield f"{obj}/{label} {key}", Item(obj, f"{label} {key} missing", None, expected[key])
    for key in sorted(live.keys() - expected.keys()):
        yield f"{obj}/{label} {key}", Item(obj, f"unexpected {label} {key}", live[key], None)
    for key in sorted(live.keys() & expected.keys()):
        if live[key] != expected[key]:
            message = f"{label} {key}: {_changed(live[key], expected[key])}"
            yield f"{obj}/{label} {key}", Item(obj, message, live[key], expected[key])


def _table_items(obj: str, a: dict[str, Any], b: dict[str, Any]) -> Iterator[tuple[str, Item]]:
    yield from _keyed(obj, "column", a["columns"], b["columns"])
    yield from _keyed(obj, "index", a["indexes"], b["indexes"])
    for label in ("foreign_keys", "constraints"):
        name = label[:-1].replace("_", " ")
        live, expected = set(a[label]), set(b[label])
        for value in sorted(expected - live):
            yield f"{obj}/{name} {value}", Item(obj, f"{name} {value} missing", None, value)
        for value in sorted(live - expected):
            yield f"{obj}/{name} {value}", Item(obj, f"unexpected {name} {value}", value, None)
    if a["options"] != b["options"]:
        message = f"table options {a['options']!r} (expected {b['options']!r})"
        yield f"{obj}/{OPTIONS}", Item(obj, message, a["options"], b["options"])
    shared = set(a["column_order"]) & set(b["column_order"])
    order = [c for c in a["column_order"] if c in shared], [c for c in b["column_order"] if c in shared]
    if order[0] != order[1]:
        message = f"column order {', '.join(order[0])} (expected {', '.join(order[1])})"
        yield f"{obj}/{ORDER}", Item(obj, message, order[0], order[1])


def difference_items(
    live: Schema, expected: Schema, *, extra: str = "not created by any applied migration"
) -> dict[str, Item]:
    """Every difference, keyed by item ("table commands/column cursor_chat_id", "view v", ...);
    `extra` describes an object only `live` has."""
    out: dict[str, Item] = {}
    for key in sorted(expected.keys() - live.keys()):
        out[key] = Item(key, "missing", None, expected[key])
    for key in sorted(live.keys() - expected.keys()):
        out[key] = Item(key, extra, live[key], None)
    for key in sorted(live.keys() & expected.keys()):
        a, b = live[key], expected[key]
        if a == b:
            continue
        if key.startswith("table "):
            out.update(_table_items(key, a, b))
        else:
            message = f"definition differs: {a['sql']!r} (expected {b['sql']!r})"
            out[key] = Item(key, message, a, b)
    return out


def lookup(schema: Schema, key: str) -> Any:
    """The description of one item (a key of difference_items) in `schema`; None if absent."""
    obj, _, item = key.partition("/")
    description = schema.get(obj)
    if not item or description is None:
        return description
    if item == ORDER:
        return description["column_order"]
    if item == OPTIONS:
        return description["options"]
    for label, field in _FIELDS.items():
        if item.startswith(label + " "):
            name = item[len(label) + 1 :]
            found = description[field]
            if isinstance(found, dict):
                return found.get(name)
            return name if name in found else None
    raise ValueError(f"not a schema item: {key!r}")


def group(items: dict[str, Item]) -> dict[str, list[str]]:
    """Item messages grouped by object ("table commands": ["column cursor_chat_id missing", ...])."""
    out: dict[str, list[str]] = {}
    for item in items.values():
        out.setdefault(item.obj, []).append(item.message)
    return out


def differences(
    live: Schema, expected: Schema, *, extra: str = "not created by any applied migration"
) -> dict[str, list[str]]:
    """Differences grouped by object ("table commands": ["column cursor_chat_id missing", ...])."""
    return group(difference_items(live, expected, extra=extra))


def summarise(diff: dict[str, list[str]], limit: int = 6) -> str:
    """One line for an error message: the first few differences, object by object."""
    parts = [f"{obj}: {'; '.join(items)}" for obj, items in diff.items()]
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return " | ".join(parts[:limit]) + more
