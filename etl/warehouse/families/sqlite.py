"""SQLite: the file database of the demo and of small setups. One writer at a time (the
transaction's BEGIN IMMEDIATE), times stored as text, no column changes in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..failures import ErrorKind, first_line
from .base import Family, ms_macros, null_safe_pick


def _sqlite_timestamps(rows: list[list[Any]], timestamp_indexes: list[int]) -> None:
    """Datetimes in ``rows`` (changed in place) as the text SQLAlchemy's SQLite DateTime reads
    back (sqlite3's own datetime adapter is deprecated)."""
    texts: dict[Any, Any] = {None: None}  # runs of one chunk mostly share a few timestamps
    for index in timestamp_indexes:
        for row in rows:
            value = row[index]
            text = texts.get(value)
            if text is None and value is not None:
                text = texts[value] = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            row[index] = text


def _sqlite_ms(x: str) -> str:
    # SQLite's julian day holds whole milliseconds (it rounds the text's fraction to them, half
    # up); one julianday() call a time, not text surgery: the timeline nests these deeply, and
    # evaluating each time twice made it three times slower.
    return f"CAST(ROUND((julianday({x}) - 2440587.5) * 86400000.0) AS INTEGER)"


def _sqlite_from_ms(m: str) -> str:
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', ({m}) / 1000, 'unixepoch')"
        f" || printf('.%03d', ({m}) % 1000))"
    )


@dataclass(frozen=True)
class SQLiteFamily(Family):
    name: str = "sqlite"
    # Most columns one table may have (SQLite's default SQLITE_MAX_COLUMN).
    max_columns: int = 2000
    label: str = "SQLite"

    placeholder = "?"
    # CROSS JOIN keeps the stage outermost: SQLite has no statistics for it.
    stage_join = "CROSS JOIN"
    view_now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    view_macros = {
        # Rows written before numbers kept their literal may hold Infinity (not JSON): skipped.
        "envs_json": lambda x: f"(CASE WHEN json_valid({x}) THEN {x} ELSE '{{}}' END)",
        "days_ago": lambda n: f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{int(n)} days')",
        "week_start": lambda x: f"date({x}, '-6 days', 'weekday 1')",
        "next_week": lambda w: f"date({w}, '+7 days')",
        "days_before": lambda x, n: f"datetime({x}, '-{int(n)} days')",
        **ms_macros(_sqlite_ms, _sqlite_from_ms),
        # SQLite keeps times as text in more than one layout: compare them as instants.
        "later": null_safe_pick(lambda a, b: f"julianday({a}) >= julianday({b})"),
        "earlier": null_safe_pick(lambda a, b: f"julianday({a}) <= julianday({b})"),
        "int_div": lambda a, b: f"(({a}) / ({b}))",
    }

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        code = getattr(orig, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF
        if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED: another writer, try again
            return "transient"
        if primary in (18, 19, 20, 25):  # TOOBIG, CONSTRAINT, MISMATCH, RANGE
            return "data"
        if primary == 1 and "too many columns" in str(orig):
            return "data"
        return "other"

    @contextmanager
    def table_lock(self, conn: Connection, key: int, table: str) -> Iterator[None]:
        # None needed: the transaction's BEGIN IMMEDIATE (etl.database) takes SQLite's write
        # lock with the first statement, and that serializes writers.
        yield

    @contextmanager
    def bounded_lock_waits(self, conn: Connection, seconds: float) -> Iterator[None]:
        yield  # the engine's busy timeout bounds every wait already

    def make_nullable(self, conn: Connection, table: sa.Table, column: str) -> None:
        # SQLite cannot change a column: copy the table into the current definition.
        quote = conn.dialect.identifier_preparer.quote
        name, old = quote(table.name), quote(f"{table.name}_old")
        columns = ", ".join(quote(c.name) for c in table.columns)
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {old}")
        table.create(conn)
        conn.exec_driver_sql(
            f"INSERT INTO {name} ({columns}) "  # noqa: S608 - quoted names
            f"SELECT {columns} FROM {old}"
        )
        conn.exec_driver_sql(f"DROP TABLE {old}")

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        # Column by column from the table's own definitions, not CREATE TABLE ... AS SELECT:
        # SQLite names a column called true or false (any case) in such a copy "columnN",
        # alias or not, and the stage's INSERT then finds no column "false".
        quote = conn.dialect.identifier_preparer.quote_identifier
        definitions = ", ".join(
            f"{quote(name)} {declared}"
            for _, name, declared, *_ in conn.exec_driver_sql(f"PRAGMA main.table_info({runs})")
        )
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {stage} ({definitions})")

    def drop_stage(self, conn: Connection, stage: str) -> None:
        conn.exec_driver_sql(f"DROP TABLE temp.{stage}")

    def fill_stage(
        self,
        conn: Connection,
        stage: str,
        columns: list[str],
        rows: list[list[Any]],
        timestamps: list[int],
    ) -> None:
        _sqlite_timestamps(rows, timestamps)
        super().fill_stage(conn, stage, columns, rows, timestamps)

    def row_differs(self, left: list[str], right: list[str]) -> str:
        return f"({', '.join(left)}) IS NOT ({', '.join(right)})"

    def write_refusal(self, conn: Connection) -> str | None:
        # BEGIN IMMEDIATE takes the write lock on a read-only file too, and os.access says
        # yes to root: only a write tells. Setting user_version to its own value writes the
        # first page (and opens the journal, which a read-only folder refuses).
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
        try:
            conn.exec_driver_sql(f"PRAGMA user_version = {version}")
        except sa.exc.OperationalError as exc:
            return first_line(exc)
        return None
