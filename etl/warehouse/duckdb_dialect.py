"""duckdb-engine's SQLAlchemy dialect, with the schema reflection nsml-etl uses read from
DuckDB's own catalog functions.

duckdb-engine reflects through SQLAlchemy's PostgreSQL queries, and those of SQLAlchemy 2.1 ask
``pg_catalog`` for what DuckDB's emulation of it lacks (``pg_collation``, the ``regclass``
type): the columns, primary key and unique constraints of a table fail to reflect. Everything
else is duckdb-engine's. SQLAlchemy loads this module through its dialect registry
(:mod:`etl.warehouse.duckdb_family` registers it as ``duckdb+duckdb_engine``), only when a DuckDB
URL is opened, so nsml-etl imports without the ``duckdb`` extra.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from duckdb_engine import Dialect as DuckDBEngineDialect
from sqlalchemy.engine import Connection

# DuckDB's type names (duckdb_columns().data_type, before any "(...)") as SQLAlchemy types.
_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "VARCHAR": sa.Text,
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


class DuckDBDialect(DuckDBEngineDialect):  # type: ignore[misc]  # duckdb-engine is untyped here
    """duckdb-engine's dialect; columns and constraints reflected from DuckDB's catalog."""

    supports_statement_cache = False  # as duckdb-engine's

    def get_columns(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        rows = connection.exec_driver_sql(
            "SELECT column_name, data_type, is_nullable, column_default "
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
            "SELECT constraint_name, constraint_column_names FROM duckdb_constraints() "
            f"WHERE {_SCOPE} AND constraint_type = $3 ORDER BY constraint_index",
            (table_name, schema, kind),
        ).all()
        return [(name, list(columns)) for name, columns in rows]

    def get_pk_constraint(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        found = self._constraints(connection, table_name, schema, "PRIMARY KEY")
        name, columns = found[0] if found else (None, [])
        return {"name": name, "constrained_columns": columns}

    def get_unique_constraints(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        return [
            {"name": name, "column_names": columns}
            for name, columns in self._constraints(connection, table_name, schema, "UNIQUE")
        ]
