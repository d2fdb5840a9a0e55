"""Reporting views from the ``.sql`` files in ``sql/``: one view per file and runs table.

A file is one SELECT with a header comment saying what question it answers; each runs table
gets its own set of views (their names: :mod:`etl.tablenames`). Dialect differences are template
macros, expanded here per database (each family's SQL for them: :mod:`etl.warehouse.families`):

* ``{{runs}}``, ``{{history}}``, ``{{batches}}``: the quoted table names;
  ``{{table_name}}``: the runs table's name as a string literal (for the bookkeeping tables);
* ``{{key_collation}}`` (MySQL files only): the server's exact collation, to group or compare
  keys as nsml-etl stores them (``A`` and ``A `` are two env keys);
* ``{{exact}}``, after a text column: compare and group it exactly as stored (MySQL: the exact
  collation; nothing elsewhere, where that is the default);
* ``{{terminal_statuses}}``: the statuses in :data:`etl.transform.TERMINAL_STATUSES`;
  ``{{run_failed}}``, ``{{run_pending}}``, ...: each documented run status
  (:data:`etl.transform.RUN_STATUSES`) as a string literal;
* ``{{now}}`` (UTC), ``{{days_ago(N)}}``, ``{{week_start(x)}}`` (the Monday of x's week),
  ``{{next_week(w)}}`` (the Monday after Monday w), ``{{days_before(x, N)}}`` (N days before
  x, for a bound an index can use), ``{{seconds_between(a, b)}}`` (in whole milliseconds);
* ``{{envs_json(x)}}``: the envs text ``x`` as the database's JSON functions can read it
  (json on PostgreSQL, with NUL shown as U+FFFD; an unreadable document as ``{}`` on SQLite);
* ``{{nodes}}``, ``{{node_history}}``: the quoted node tables (``nsml_run_nodes``, its history);
* ``{{gpu_servers}}``: the quoted GPU servers table; ``{{calendar}}``: the quoted calendar of
  the day views (:mod:`etl.reporting.calendar`); ``{{waiting_statuses}}``: the statuses of a
  run that has not started; ``{{ran_statuses}}``: the terminal statuses that imply it started;
* ``{{batch_succeeded}}``, ``{{batch_partial}}``, ...: each status of an export batch
  (:data:`etl.batches.BATCH_STATUSES`) as a string literal; ``{{command_export}}`` and
  ``{{command_load}}``: what made a batch (:data:`etl.batches.BATCH_COMMANDS`);
* ``{{later(a, b)}}`` / ``{{earlier(a, b)}}``: the later / earlier of two times, either of which
  may be NULL (then the other); ``{{midpoint(a, b)}}``: the moment halfway between two times;
  ``{{int_div(a, b)}}``: integer division;
* ``{{include(name)}}``: the SELECT of another file, for use as a subquery (so views never
  depend on each other: each can be dropped and created alone).

Where macros are not enough, ``name.<family>.sql`` (sqlite, postgresql, mysql) replaces
``name.sql`` for that database. Views name only fixed columns, so new env columns never break
them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..clock import utc_now
from ..errors import DatabaseError
from ..tablenames import (
    BATCHES_TABLE,
    CALENDAR_TABLE,
    GPU_SERVERS_TABLE,
    HISTORY_TABLE,
    NODE_HISTORY_TABLE,
    NODES_TABLE,
    SQL_PACKAGE,
    view_bases,
    view_name,
)
from ..transform import (
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PENDING,
    RUN_STATUSES,
    RUN_STOPPED,
    TERMINAL_STATUSES,
)
from ..warehouse import Warehouse
from ..warehouse.batches import BATCH_COMMANDS, BATCH_STATUSES
from ..warehouse.failures import first_line
from ..warehouse.families import family_of
from ..warehouse.gpuservers import ensure_table
from .calendar import fill_calendar

# A run in one of these has not started yet; any other status that is not terminal means it has.
WAITING_STATUSES = (RUN_PENDING,)
# Terminal statuses that say the run started (CANCELED may end a run that never left the queue).
RAN_STATUSES = (RUN_COMPLETED, RUN_FAILED, RUN_STOPPED)
_INCLUDE = re.compile(r"\{\{include\((\w+)\)\}\}")
_MACRO_NAME = re.compile(r"(\w+)")
_QUESTION = re.compile(r"^--\s*Question:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class View:
    name: str  # in the database: the file's name for nsml_runs, <table>__... for other tables
    question: str
    sql: str


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        depth += (char == "(") - (char == ")")
        current.append(char)
    args.append("".join(current).strip())
    return args


def _macro_error(where: str, text: str, start: int, problem: str) -> ValueError:
    line = text.count("\n", 0, start) + 1
    shown = text[start : text.find("}}", start) + 2 if "}}" in text[start:] else start + 40]
    return ValueError(f"{where}:{line}: unknown or malformed macro {shown!r}: {problem}")


def check_macros(
    template: str, where: str, functions: Mapping[str, Callable[..., str]], names: Iterable[str]
) -> None:
    """Raise ValueError naming ``where`` and the line of the first macro of ``template`` that
    :func:`expand` could not expand: an unknown name, a call without its closing ``)}}``, a
    wrong number of arguments, or a quote in an argument (arguments are split at top-level
    commas, so a string literal with a comma in it would be cut: write literals outside)."""
    known = {*names, "now"}
    start = template.find("{{")
    while start != -1:
        match = _MACRO_NAME.match(template, start + 2)
        name = match.group(1) if match else ""
        after = match.end() if match else start + 2
        if template.startswith("}}", after):
            if name not in known:
                raise _macro_error(where, template, start, f"no macro is named {name!r}")
        elif template.startswith("(", after) and name:
            depth, end = 0, after
            for end in range(after, len(template)):
                depth += (template[end] == "(") - (template[end] == ")")
                if depth == 0:
                    break
            if depth != 0 or not template.startswith("}}", end + 1):
                raise _macro_error(where, template, start, "expected ')}}' to close it")
            args = template[after + 1 : end]
            if name != "include":
                if name not in functions:
                    raise _macro_error(where, template, start, f"no macro is named {name!r}")
                if "'" in args or '"' in args:
                    raise _macro_error(
                        where, template, start, "a quote in an argument; write literals outside"
                    )
                try:
                    inspect.signature(functions[name]).bind(*_split_args(args))
                except TypeError:
                    takes = len(inspect.signature(functions[name]).parameters)
                    got = len(_split_args(args))
                    raise _macro_error(
                        where, template, start, f"{name} takes {takes} arguments, got {got}"
                    ) from None
        else:
            raise _macro_error(where, template, start, "expected a name, then '}}' or '('")
        start = template.find("{{", start + 2)


def expand(template: str, dialect: str, names: dict[str, str], where: str = "the template") -> str:
    """Replace the macros of one template for ``dialect`` (its family's, see
    :attr:`etl.warehouse.families.Family.view_macros`); a macro it cannot expand raises
    ValueError naming ``where`` and the line (:func:`check_macros`)."""
    family = family_of(dialect)
    check_macros(template, where, family.view_macros, names)
    text = template
    for name, value in {**names, "now": family.view_now}.items():
        text = text.replace("{{" + name + "}}", value)
    functions = family.view_macros
    while (start := text.find("{{")) != -1:
        open_paren = text.index("(", start)
        name = text[start + 2 : open_paren].strip()
        depth, end = 0, open_paren
        for end in range(open_paren, len(text)):
            depth += (text[end] == "(") - (text[end] == ")")
            if depth == 0:
                break
        if name not in functions or text[end + 1 : end + 3] != "}}":
            raise ValueError(f"unknown or malformed macro at {text[start : end + 3]!r}")
        text = (
            text[:start]
            + functions[name](*_split_args(text[open_paren + 1 : end]))
            + text[end + 3 :]
        )
    return text


def load_views(
    dialect: str, table: str, quote: Callable[[str], str], collation: str | None = None
) -> list[View]:
    """Every view of runs table ``table`` for ``dialect``, in file-name order, macros
    expanded; ``collation`` is MySQL's exact one for ``{{key_collation}}``."""
    family = family_of(dialect).name
    files = {f.name: f for f in resources.files(SQL_PACKAGE).iterdir() if f.name.endswith(".sql")}
    names = {
        "runs": quote(table),
        "history": quote(HISTORY_TABLE),
        "batches": quote(BATCHES_TABLE),
        "gpu_servers": quote(GPU_SERVERS_TABLE),
        "calendar": quote(CALENDAR_TABLE),
        "nodes": quote(NODES_TABLE),
        "node_history": quote(NODE_HISTORY_TABLE),
        "table_name": f"'{table}'",  # validated: [a-z0-9_] only
        "terminal_statuses": _sql_list(TERMINAL_STATUSES),
        "waiting_statuses": _sql_list(WAITING_STATUSES),
        "ran_statuses": _sql_list(RAN_STATUSES),
        **{f"run_{s.removeprefix('RUN_STATE_').lower()}": f"'{s}'" for s in RUN_STATUSES},
        # A batch's status and command, as batches.py writes them.
        **{f"batch_{status}": f"'{status}'" for status in BATCH_STATUSES},
        **{f"command_{command}": f"'{command}'" for command in BATCH_COMMANDS},
    }
    if collation:
        names["key_collation"] = collation
    # After a text column: group or compare it exactly, as stored ("Running" and "RUNNING"
    # are two statuses); only MySQL's default collation needs telling.
    names["exact"] = f" COLLATE {collation}" if collation else ""

    def template(base: str) -> str | None:
        source = files.get(f"{base}.{family}.sql") or files.get(f"{base}.sql")
        if source is None:
            return None
        text = source.read_text(encoding="utf-8")
        # Each file on its own, so that a bad macro's line is the file's (includes shift lines).
        check_macros(text, f"sql/{source.name}", family_of(dialect).view_macros, names)
        return text

    views = []
    for base in view_bases():
        text = template(base)
        if text is None:
            continue  # only dialect-specific files, none for this database
        question = _QUESTION.search(text)
        views.append(
            View(
                view_name(table, base),
                question.group(1).strip() if question else "",
                expand(_with_includes(text, template), dialect, names).strip().rstrip(";"),
            )
        )
    return views


def _sql_list(statuses: Iterable[str]) -> str:
    return ", ".join(f"'{s}'" for s in sorted(statuses))  # our own constants, not data


def _with_includes(text: str, template: Callable[[str], str | None], depth: int = 0) -> str:
    """``text`` with each ``{{include(name)}}`` replaced by that file's SELECT."""

    def replace(match: re.Match[str]) -> str:
        included = template(match.group(1))
        if included is None or depth > 3:
            raise ValueError(f"cannot include {match.group(1)!r}")
        return _with_includes(included, template, depth + 1).strip().rstrip(";")

    return _INCLUDE.sub(replace, text)


def create_views(warehouse: Warehouse, zone: str | None = None) -> list[View]:
    """Create or replace every view of the warehouse's runs table (and the tables they read,
    if this is a new database: its schema makes them); another table's views are left alone.
    ``zone`` is the day views' local zone (None: the one the calendar has; see
    :func:`etl.reporting.calendar.fill_calendar`)."""
    warehouse.schema.prepare(set(), set())
    return _create(warehouse, _views_of(warehouse), zone)


def create_missing_views(warehouse: Warehouse) -> list[View]:
    """Create the views of the warehouse's runs table that the database lacks, and return
    them; those there are stay as they are (``nsml-etl views`` replaces them). Cheap when none
    is missing: one look at the names, no SQL built. For export and load, once the runs are
    committed; none while the runs table does not exist (nothing landed yet)."""
    table = warehouse.schema.table_name
    try:
        inspector = sa.inspect(warehouse.engine)
        existing = set(inspector.get_view_names())
        if not inspector.has_table(table):
            return []
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading the view names failed: {first_line(exc)}") from exc
    if all(view_name(table, base) in existing for base in view_bases()):
        return []
    return _create(warehouse, [v for v in _views_of(warehouse) if v.name not in existing])


def _views_of(warehouse: Warehouse) -> list[View]:
    engine = warehouse.engine
    quote = engine.dialect.identifier_preparer.quote
    collation = warehouse.family.key_collation(engine.dialect)
    return load_views(engine.dialect.name, warehouse.schema.table_name, quote, collation)


def _create(warehouse: Warehouse, views: list[View], zone: str | None = None) -> list[View]:
    """Drop and create ``views`` in one transaction (on MySQL, whose DDL commits at once, one
    by one), with the GPU servers table they read; on PostgreSQL each carries its question as
    its comment, which Metabase and Superset show as the dataset's description."""
    engine = warehouse.engine
    quote = engine.dialect.identifier_preparer.quote
    comments = warehouse.family.name == "postgresql"  # the only one of ours with view comments
    creating = f"table {GPU_SERVERS_TABLE}"
    try:
        with engine.begin() as conn:
            ensure_table(conn)  # the GPU-hours views read it; it starts empty
            creating = f"table {CALENDAR_TABLE}"
            fill_calendar(conn, warehouse.schema.table_name, utc_now().date(), zone)
            for view in views:
                creating = f"view {view.name}"
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote(view.name)}")
                conn.exec_driver_sql(f"CREATE VIEW {quote(view.name)} AS {view.sql}")
                if comments and view.question:
                    conn.exec_driver_sql(
                        f"COMMENT ON VIEW {quote(view.name)} IS {_literal(engine, view.question)}"
                    )
    except SQLAlchemyError as exc:
        raise DatabaseError(f"creating {creating} failed: {first_line(exc)}") from exc
    return views


def _literal(engine: Engine, text: str) -> str:
    """``text`` as a string literal of the engine's dialect: COMMENT ON takes no bound
    parameter (a utility statement), and the text is a question from our own sql/ files."""
    literal = sa.literal(text, sa.String()).compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
    )
    return str(literal).replace("%", "%%")  # exec_driver_sql's paramstyle reads % as a marker


def query_view(
    engine: Engine, name: str, order_by: str | None = None, limit: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
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
