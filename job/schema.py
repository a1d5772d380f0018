"""A normalised description of a database schema, and the differences between two of them.

Drift detection compares structure (tables, columns with type/notnull/default/pk, indexes, foreign
keys, triggers, views), not raw SQL text; where SQL text matters (a partial index's WHERE, a trigger
or view body) it compares tokens. The migration ledgers and the job's own tables are not part of the
schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from job.sqltext import strip_if_not_exists, tokens

ACCEPTANCES_TABLE = "_relayer_job_acceptances"
NOT_SCHEMA = frozenset({"_schema_migrations", "_sqlx_migrations", ACCEPTANCES_TABLE})

Schema = dict[str, dict[str, Any]]  # object key ("table commands", "view v", ...) -> description


def _words(sql: str | None) -> str:
    return " ".join(strip_if_not_exists(tokens(sql or "")))


def _where_clause(index_sql: str | None) -> str:
    words = tokens(index_sql or "")
    return " ".join(words[words.index("WHERE") + 1 :]) if "WHERE" in words else ""


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _table(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    quoted = _ident(name)
    columns = {
        row[1]: {
            "type": " ".join(str(row[2]).upper().split()),
            "notnull": bool(row[3]),
            "default": _words(row[4]) or None,
            "pk": int(row[5]),
        }
        for row in conn.execute(f'PRAGMA table_xinfo("{quoted}")')
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
        }
    return {"columns": columns, "foreign_keys": foreign_keys, "indexes": indexes}


def describe(conn: sqlite3.Connection) -> Schema:
    """The schema of `conn`'s main database, ledgers and SQLite's internal tables left out."""
    schema: Schema = {}
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'view', 'trigger') ORDER BY name"
    ).fetchall()
    for kind, name, sql in rows:
        if name in NOT_SCHEMA:
            continue
        if kind == "table":
            schema[f"table {name}"] = _table(conn, name)
        else:
            schema[f"{kind} {name}"] = {"sql": _words(sql)}
    return schema


def _diff_dicts(label: str, live: dict[str, Any], expected: dict[str, Any]) -> Iterable[str]:
    for key in sorted(expected.keys() - live.keys()):
        yield f"{label} {key} missing"
    for key in sorted(live.keys() - expected.keys()):
        yield f"unexpected {label} {key}"
    for key in sorted(live.keys() & expected.keys()):
        if live[key] != expected[key]:
            changed = [
                f"{attr} {live[key].get(attr)!r} (expected {expected[key].get(attr)!r})"
                for attr in sorted(set(live[key]) | set(expected[key]))
                if live[key].get(attr) != expected[key].get(attr)
            ]
            yield f"{label} {key}: {', '.join(changed)}"


def differences(
    live: Schema, expected: Schema, *, extra: str = "not created by any applied migration"
) -> dict[str, list[str]]:
    """Differences grouped by object ("table commands": ["column cursor_chat_id missing", ...]);
    `extra` describes an object only `live` has."""
    out: dict[str, list[str]] = {}
    for key in sorted(expected.keys() - live.keys()):
        out[key] = ["missing"]
    for key in sorted(live.keys() - expected.keys()):
        out[key] = [extra]
    for key in sorted(live.keys() & expected.keys()):
        a, b = live[key], expected[key]
        if a == b:
            continue
        if key.startswith("table "):
            found = [
                *_diff_dicts("column", a["columns"], b["columns"]),
                *_diff_dicts("index", a["indexes"], b["indexes"]),
            ]
            fk_a, fk_b = set(a["foreign_keys"]), set(b["foreign_keys"])
            found += [f"foreign key {fk} missing" for fk in sorted(fk_b - fk_a)]
            found += [f"unexpected foreign key {fk}" for fk in sorted(fk_a - fk_b)]
        else:
            found = [f"definition differs: {a['sql']!r} (expected {b['sql']!r})"]
        out[key] = found
    return out


def summarise(diff: dict[str, list[str]], limit: int = 6) -> str:
    """One line for an error message: the first few differences, object by object."""
    parts = [f"{obj}: {'; '.join(items)}" for obj, items in diff.items()]
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return " | ".join(parts[:limit]) + more
