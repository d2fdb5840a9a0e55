"""duckdb-engine's SQLAlchemy dialect, with the schema reflection nsml-etl uses read from
DuckDB's own catalog functions, and a database file that is open only while it is used.

DuckDB lets one process at a time open a file (for writing; a reader is refused too while a
writer has it). So connections are not pooled: the file is closed (and its write-ahead log
checkpointed) when a transaction's connection is, and opening it waits, like SQLite's busy
timeout, up to :data:`OPEN_TIMEOUT_S` for another process to close it. Two exports into one
file then take turns transaction by transaction, as on SQLite. The turns are an exclusive
``flock`` on a file beside the database (``NAME.nsml-etl-lock``), taken by a process's first
open connection and released after its last one has closed the database: DuckDB's own lock
is let go before its close has finished with the write-ahead log, and a process that opened
the file in that gap lost a commit (measured: one run in 60 missing after two exports).

duckdb-engine reflects through SQLAlchemy's PostgreSQL queries, and those of SQLAlchemy 2.1 ask
``pg_catalog`` for what DuckDB's emulation of it lacks (``pg_collation``, the ``regclass``
type): the columns, primary key and unique constraints of a table fail to reflect. Everything
else is duckdb-engine's. SQLAlchemy loads this module through its dialect registry
(:mod:`etl.warehouse.families.duckdb` registers it as ``duckdb+duckdb_engine``), only when a DuckDB
URL is opened, so nsml-etl imports without the ``duckdb`` extra.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Any

import duckdb
import sqlalchemy as sa
from duckdb_engine import Dialect as DuckDBEngineDialect
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.engine.interfaces import (
    ReflectedColumn,
    ReflectedPrimaryKeyConstraint,
    ReflectedUniqueConstraint,
)

# How long opening the file waits for another process to close it (as SQLite's busy timeout).
OPEN_TIMEOUT_S = 60
# Between tries: a chunk's transaction takes tens of milliseconds.
OPEN_RETRY_S = 0.05
# DuckDB's message when another process has the file open.
FILE_LOCKED = "Could not set lock on file"

# DuckDB's type names (duckdb_columns().data_type, before any "(...)") as SQLAlchemy types.
_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "VARCHAR": sa.String,  # DuckDB keeps no length
    "BIGINT": sa.BigInteger,
    "INTEGER": sa.Integer,
    "SMALLINT": sa.SmallInteger,
    "TINYINT": sa.SmallInteger,
    "HUGEINT": sa.BigInteger,
    "UBIGINT": sa.BigInteger,
    "UINTEGER": sa.BigInteger,
    "TIMESTAMP": sa.DateTime,
    "TIMESTAMP_NS": sa.DateTime,
    "TIMESTAMP_MS": sa.DateTime,
    "TIMESTAMP_S": sa.DateTime,
    "TIMESTAMP WITH TIME ZONE": sa.DateTime,
    "DATE": sa.Date,
    "DOUBLE": sa.Float,
    "FLOAT": sa.Float,
    "DECIMAL": sa.Numeric,
    "BOOLEAN": sa.Boolean,
    "BLOB": sa.LargeBinary,
}

_SCOPE = (
    "database_name = current_database() AND schema_name = COALESCE(CAST($2 AS VARCHAR), "
    "current_schema()) AND table_name = $1"
)


class _FileTurns:
    """This process's turn at one database file: the ``flock`` held while any connection of
    the process has the file open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.users = 0
        self.fd: int | None = None

    def enter(self, deadline: float) -> None:
        if self.users == 0:
            try:
                fd = os.open(f"{self.path}.nsml-etl-lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a read-only folder: DuckDB's own lock is all there is
                self.users += 1
                return
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break  # DuckDB's own lock error then says who has the file
                    time.sleep(OPEN_RETRY_S)
            self.fd = fd
        self.users += 1

    def leave(self) -> None:
        self.users -= 1
        if self.users == 0 and self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


_TURNS: dict[str, _FileTurns] = {}
_TURNS_GUARD = threading.Lock()  # held while a connection opens or closes the file


def _database_path(cparams: dict[str, Any]) -> str | None:
    database = cparams.get("database")
    if not isinstance(database, str) or not database or database.startswith(":memory:"):
        return None
    return os.path.realpath(database)


class DuckDBDialect(DuckDBEngineDialect):
    """duckdb-engine's dialect; columns and constraints reflected from DuckDB's catalog."""

    supports_statement_cache = False  # as duckdb-engine's

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # Not pooled: an idle pooled connection would keep the file from every other process.
        return pool.NullPool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        path = _database_path(cparams)
        if path is None:
            return super().connect(*cargs, **cparams)
        with _TURNS_GUARD:
            turns = _TURNS.setdefault(path, _FileTurns(path))
            turns.enter(deadline)
            try:
                connection = self._open(deadline, *cargs, **cparams)
            except BaseException:
                turns.leave()
                raise
        connection._nsml_etl_turns = turns
        return connection

    def _open(self, deadline: float, *cargs: Any, **cparams: Any) -> Any:
        while True:
            try:
                return super().connect(*cargs, **cparams)
            except duckdb.IOException as exc:  # a process without our lock (DuckDB's CLI)
                if FILE_LOCKED not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(OPEN_RETRY_S)

    def do_close(self, dbapi_connection: Any) -> None:
        turns = getattr(dbapi_connection, "_nsml_etl_turns", None)
        with _TURNS_GUARD:
            try:
                dbapi_connection.close()
            finally:
                if turns is not None:
                    turns.leave()

    def get_columns(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedColumn]:
        rows = connection.exec_driver_sql(
            "SELECT column_name, data_type, is_nullable, column_default "  # noqa: S608 - bound
            f"FROM duckdb_columns() WHERE {_SCOPE} ORDER BY column_index",
            (table_name, schema),
        ).all()
        if not rows:
            raise sa.exc.NoSuchTableError(table_name)
        return [
            {
                "name": name,
                "type": _TYPES.get(data_type.split("(")[0], sa.types.NullType)(),
                "nullable": bool(nullable),
                "default": default,
                "autoincrement": False,
            }
            for name, data_type, nullable, default in rows
        ]

    def _constraints(
        self, connection: Connection, table_name: str, schema: str | None, kind: str
    ) -> list[tuple[str, list[str]]]:
        rows = connection.exec_driver_sql(
            "SELECT constraint_name, constraint_column_names "  # noqa: S608 - values bound
            f"FROM duckdb_constraints() WHERE {_SCOPE} AND constraint_type = $3 "
            "ORDER BY constraint_index",
            (table_name, schema, kind),
        ).all()
        return [(name, list(columns)) for name, columns in rows]

    def get_pk_constraint(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> ReflectedPrimaryKeyConstraint:
        found = self._constraints(connection, table_name, schema, "PRIMARY KEY")
        name, columns = found[0] if found else (None, [])
        return {"name": name, "constrained_columns": columns}

    def get_unique_constraints(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedUniqueConstraint]:
        return [
            {"name": name, "column_names": columns}
            for name, columns in self._constraints(connection, table_name, schema, "UNIQUE")
        ]
