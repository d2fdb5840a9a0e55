"""Reporting views from the ``.sql`` files in ``sql/``: one view per file and runs table.

A file is one SELECT with a header comment saying what question it answers; each runs table
gets its own set of views (their names: :mod:`etl.viewnames`). Dialect differences are template
macros, expanded here per database:

* ``{{runs}}``, ``{{history}}``, ``{{batches}}``: the quoted table names;
  ``{{table_name}}``: the runs table's name as a string literal (for the bookkeeping tables);
* ``{{key_collation}}`` (MySQL files only): the server's exact collation, to group or compare
  keys as nsml-etl stores them (``A`` and ``A `` are two env keys);
* ``{{terminal_statuses}}``: the statuses in :data:`etl.transform.TERMINAL_STATUSES`;
* ``{{now}}`` (UTC), ``{{days_ago(N)}}``, ``{{week_start(x)}}`` (the Monday of x's week),
  ``{{seconds_between(a, b)}}``;
* ``{{envs_json(x)}}``: the envs text ``x`` as the database's JSON functions can read it
  (json on PostgreSQL, with NUL shown as U+FFFD; an unreadable document as ``{}`` on SQLite).

Where macros are not enough, ``name.<dialect>.sql`` (sqlite, postgresql, mysql) replaces
``name.sql`` for that database. Views name only fixed columns, so new env columns never break
them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .dialects import first_line
from .errors import DatabaseError
from .load import BATCHES_TABLE, HISTORY_TABLE, RunStore, key_collation
from .transform import TERMINAL_STATUSES
from .viewnames import SQL_PACKAGE, view_bases, view_name

_NOW = {
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
    "postgresql": "(now() AT TIME ZONE 'UTC')",
    "mysql": "UTC_TIMESTAMP()",
}
# PostgreSQL's json cannot turn the escape \u0000 into text (its text holds no NUL), and envs
# keeps NUL as that escape: an escape not itself escaped (an even run of backslashes before
# it) reads as U+FFFD, as in the text columns. Rows written before numbers kept their literal
# may hold NaN or Infinity, which is not JSON: read as {} rather than failing the whole view.
_PG_ENVS_JSON = (r"CAST(CASE "
                 r"WHEN {x} ~ '(:|,|\[)\s*-?(NaN|Infinity)\s*(,|\}|\])' THEN '{}' "
                 r"WHEN strpos({x}, '\u0000') > 0 "
                 r"THEN regexp_replace({x}, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') "
                 r"ELSE {x} END AS json)")

_FUNCTIONS: dict[str, dict[str, Callable[..., str]]] = {
    "sqlite": {
        # Rows written before numbers kept their literal may hold Infinity (not JSON): skipped.
        "envs_json": lambda x: f"(CASE WHEN json_valid({x}) THEN {x} ELSE '{{}}' END)",
        "days_ago": lambda n: f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{int(n)} days')",
        "week_start": lambda x: f"date({x}, '-6 days', 'weekday 1')",
        "seconds_between": lambda a, b: f"((julianday({b}) - julianday({a})) * 86400.0)",
    },
    "postgresql": {
        "envs_json": lambda x: _PG_ENVS_JSON.replace("{x}", x),
        "days_ago": lambda n: f"((now() AT TIME ZONE 'UTC') - INTERVAL '{int(n)} days')",
        "week_start": lambda x: f"CAST(date_trunc('week', {x}) AS date)",
        "seconds_between": lambda a, b: f"EXTRACT(EPOCH FROM ({b} - {a}))",
    },
    "mysql": {
        "envs_json": lambda x: x,  # its JSON functions read an invalid document as NULL
        "days_ago": lambda n: f"(UTC_TIMESTAMP() - INTERVAL {int(n)} DAY)",
        "week_start": lambda x: f"DATE(DATE_SUB({x}, INTERVAL WEEKDAY({x}) DAY))",
        "seconds_between": lambda a, b: f"TIMESTAMPDIFF(MICROSECOND, {a}, {b}) / 1000000.0",
    },
}
_QUESTION = re.compile(r"^--\s*Question:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class View:
    name: str  # in the database: the file's name for nsml_runs, <table>__... for other tables
    question: str
    sql: str


def _family(dialect: str) -> str:
    return "mysql" if dialect in ("mysql", "mariadb") else dialect


def _split_args(text: str) -> list[str]:
    args, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        depth += (char == "(") - (char == ")")
        current.append(char)
    args.append("".join(current).strip())
    return args


def expand(template: str, dialect: str, names: dict[str, str]) -> str:
    """Replace the macros of one template for ``dialect``."""
    family = _family(dialect)
    text = template
    for name, value in {**names, "now": _NOW[family]}.items():
        text = text.replace("{{" + name + "}}", value)
    functions = _FUNCTIONS[family]
    while (start := text.find("{{")) != -1:
        open_paren = text.index("(", start)
        name = text[start + 2:open_paren].strip()
        depth, end = 0, open_paren
        for end in range(open_paren, len(text)):
            depth += (text[end] == "(") - (text[end] == ")")
            if depth == 0:
                break
        if name not in functions or text[end + 1:end + 3] != "}}":
            raise ValueError(f"unknown or malformed macro at {text[start:end + 3]!r}")
        text = text[:start] + functions[name](*_split_args(text[open_paren + 1:end])) + \
            text[end + 3:]
    return text


def load_views(dialect: str, table: str, quote: Callable[[str], str],
               collation: str | None = None) -> list[View]:
    """Every view of runs table ``table`` for ``dialect``, in file-name order, macros
    expanded; ``collation`` is MySQL's exact one for ``{{key_collation}}``."""
    family = _family(dialect)
    files = {f.name: f for f in resources.files(SQL_PACKAGE).iterdir()
             if f.name.endswith(".sql")}
    names = {
        "runs": quote(table), "history": quote(HISTORY_TABLE), "batches": quote(BATCHES_TABLE),
        "table_name": f"'{table}'",  # validated: [a-z0-9_] only
        "terminal_statuses": ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)),
    }
    if collation:
        names["key_collation"] = collation
    views = []
    for base in view_bases():
        source = files.get(f"{base}.{family}.sql") or files.get(f"{base}.sql")
        if source is None:
            continue  # only dialect-specific files, none for this database
        template = source.read_text(encoding="utf-8")
        question = _QUESTION.search(template)
        views.append(View(view_name(table, base), question.group(1).strip() if question else "",
                          expand(template, dialect, names).strip().rstrip(";")))
    return views


def create_views(engine: Engine, table: str) -> list[View]:
    """Create or replace every view of ``table`` (and the tables they read, if this is a new
    database); another table's views are left alone."""
    store = RunStore(engine, table)
    store.prepare(set(), set())
    quote = engine.dialect.identifier_preparer.quote
    collation = key_collation(engine.dialect) if _family(engine.dialect.name) == "mysql" else None
    views = load_views(engine.dialect.name, table, quote, collation)
    try:
        with engine.begin() as conn:
            for view in views:
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote(view.name)}")
                conn.exec_driver_sql(f"CREATE VIEW {quote(view.name)} AS {view.sql}")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"creating view {view.name} failed: {first_line(exc)}") from exc
    return views


def query_view(engine: Engine, name: str, order_by: str | None = None,
               limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of one view."""
    quote = engine.dialect.identifier_preparer.quote
    sql = f"SELECT * FROM {quote(name)}"  # noqa: S608 - a name from our own sql/ files
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit:
        sql += f" LIMIT {int(limit)}"
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql))
        return list(result.keys()), [tuple(row) for row in result]
