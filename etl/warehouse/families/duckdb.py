"""DuckDB: the embedded analytics database, one file per database (``duckdb:///runs.duckdb``).

What it differs in from the standard SQL of :class:`Family`:

* locks: DuckDB lets one process open a file for writing; a second process (another export, a
  ``report``) cannot open it at all while the first has it open, and fails at once with
  DuckDB's ``Could not set lock on file`` (:meth:`DuckDBFamily.open_advice` says what to do:
  exit 4, no traceback). Inside one process, exports of one table (the Python API, in
  threads) take turns at a lock of the process (:meth:`DuckDBFamily.table_lock`): DuckDB's
  own optimistic concurrency would abort the second writer of a row instead of waiting;
* ids: no auto-increment columns, so the bookkeeping tables' ids come from a sequence
  (:meth:`DuckDBFamily.id_sequence`);
* a chunk is staged from a pandas DataFrame that DuckDB scans in bulk
  (:meth:`DuckDBFamily.fill_stage`), not row by row;
* the views: ``/`` on integers is a float division in DuckDB (``int_div`` is ``//``), and its
  JSON functions differ (``nsml_run_envs.duckdb.sql``, ``nsml_env_key_catalog.duckdb.sql``).

Keys compare exactly as they are (DuckDB's default collation is binary: case and trailing
spaces count) and text holds any string, NUL included: nothing to check before writing.
SQLAlchemy's dialect is duckdb-engine's, with reflection fixed for SQLAlchemy 2.1
(:mod:`etl.warehouse.duckdb_dialect`), registered here as ``duckdb+duckdb_engine``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import registry
from sqlalchemy.engine import Connection

from ..failures import ErrorKind
from .base import Family, ViewMacro, ms_macros, null_safe_pick

# The plain duckdb:// URL and duckdb-engine's own driver name both open nsml-etl's dialect.
registry.register("duckdb", "nsml_etl.warehouse.duckdb_dialect", "DuckDBDialect")
registry.register("duckdb.duckdb_engine", "nsml_etl.warehouse.duckdb_dialect", "DuckDBDialect")

# The name the staged chunk's DataFrame is registered under, for the INSERT ... SELECT.
_FRAME = "nsml_etl_chunk_frame"

# DuckDB's exception classes (duckdb.<name>) by what a failed write means.
_TRANSIENT = frozenset({"TransactionException", "ConnectionException", "InterruptException"})
_DATA = frozenset(
    {"ConstraintException", "ConversionException", "OutOfRangeException", "InvalidInputException"}
)
# DuckDB's message when another process holds the file.
_FILE_LOCKED = "Could not set lock on file"

# One writer per runs table inside this process (keyed by database file and lock key): across
# processes DuckDB's file lock already admits one process.
_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(database: str, key: int) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((database, key), threading.Lock())


_NOW = "CAST(now() AT TIME ZONE 'UTC' AS TIMESTAMP)"

_VIEW_MACROS: dict[str, ViewMacro] = {
    # json_valid: rows written before numbers kept their literal may hold NaN (not JSON).
    "envs_json": lambda x: f"(CASE WHEN json_valid({x}) THEN {x} ELSE '{{}}' END)",
    "days_ago": lambda n: f"({_NOW} - INTERVAL {int(n)} DAY)",
    "week_start": lambda x: f"CAST(date_trunc('week', {x}) AS DATE)",
    "next_week": lambda w: f"CAST({w} + INTERVAL 7 DAY AS DATE)",
    "days_before": lambda x, n: f"({x} - INTERVAL {int(n)} DAY)",
    # whole milliseconds, as every family (families/base.py, ms_macros)
    **ms_macros(
        lambda x: f"((epoch_us(CAST({x} AS TIMESTAMP)) + 500) // 1000)",
        lambda m: f"(TIMESTAMP '1970-01-01 00:00:00' + to_milliseconds({m}))",
        "// 2",
    ),
    "later": null_safe_pick(lambda a, b: f"{a} >= {b}"),
    "earlier": null_safe_pick(lambda a, b: f"{a} <= {b}"),
    # DuckDB's / on integers is a float division.
    "int_div": lambda a, b: f"(({a}) // ({b}))",
}


@dataclass(frozen=True)
class DuckDBFamily(Family):
    name: str = "duckdb"
    # DuckDB sets no limit of its own; a wide table slows every ALTER TABLE, so as SQLite.
    max_columns: int = 2000
    label: str = "DuckDB"
    savepoints: bool = False

    placeholder = "?"
    view_now = _NOW
    view_macros = _VIEW_MACROS

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        # DuckDB's errors carry no code: their class says what failed.
        if orig is None or type(orig).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
            return None
        kind = type(orig).__name__
        if kind in _TRANSIENT:
            return "transient"
        return "data" if kind in _DATA else "other"

    def open_advice(self, exc: BaseException) -> str | None:
        if _FILE_LOCKED in str(getattr(exc, "orig", None) or exc):
            return (
                "another process has the file open (DuckDB lets one process at a time open "
                "a file for writing): run the exports, loads and reports of one DuckDB file "
                "one after another"
            )
        return None

    def id_sequence(self, table: str) -> sa.Sequence | None:
        return sa.Sequence(f"{table}_id_seq")

    @contextmanager
    def table_lock(self, conn: Connection, key: int, table: str) -> Iterator[None]:
        with _process_lock(str(conn.engine.url.database), key):
            yield

    @contextmanager
    def bounded_lock_waits(self, conn: Connection, seconds: float) -> Iterator[None]:
        yield  # no other process can hold the table, and this one's writers take turns

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {stage} AS "  # noqa: S608 - quoted names
            f"SELECT * FROM main.{runs} WHERE false"
        )

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
        # DuckDB scans a registered DataFrame in bulk (an executemany is one INSERT per row).
        # Object columns: DuckDB reads each cell as what it is (str, int, datetime, None) and
        # the INSERT casts it to the stage's column type.
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        frame = pd.DataFrame(rows, columns=list(range(len(columns))), dtype=object)
        frame.columns = columns
        driver = conn.connection.driver_connection
        assert driver is not None  # a live connection of the engine's pool
        driver.register(_FRAME, frame)
        try:
            conn.exec_driver_sql(
                f"INSERT INTO {stage} ({names}) SELECT {names} FROM {_FRAME}"  # noqa: S608
            )
        finally:
            driver.unregister(_FRAME)
