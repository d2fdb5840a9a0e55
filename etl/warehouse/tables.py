"""The tables nsml-etl makes, as SQLAlchemy sees them: the column types (MySQL's own where
the generic ones do not fit, key columns with the family's exact collation), the runs table's
fixed columns, the mapping, batch, failure and history tables, and the check that an existing
runs table is one of ours (:func:`refuse_foreign_table`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles

from ..errors import DatabaseError
from ..tablenames import (
    BATCHES_TABLE,
    FAILURES_TABLE,
    HISTORY_TABLE,
    NODE_HISTORY_TABLE,
    NODES_TABLE,
)
from ..transform import CORE_COLUMNS, GONE_COLUMN, KEY_COLUMNS, LIST_TIME_COLUMNS
from .families import Family, family_of
from .families.mysql import MYSQL_MAPPING_KEY_CHARS, MYSQL_RUN_KEY_CHARS

# The MySQL and MariaDB dialects, for column types of their own.
_MYSQL = ("mysql", "mariadb")
# Table options for every table we create: MySQL's utf8 is not full UTF-8.
UTF8MB4: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}
TIMESTAMP_COLUMNS = ("fetched_at", *LIST_TIME_COLUMNS, GONE_COLUMN)


class KeyVarchar(mysql.VARCHAR):
    """A MySQL string compared as a key: created with the family's exact collation
    (:meth:`etl.warehouse.families.mysql.MySQLFamily.key_collation`)."""


class KeyMediumText(mysql.MEDIUMTEXT):
    """A long MySQL string compared as a key: created with the family's exact collation."""


def _key_collation(dialect: sa.Dialect) -> str | None:
    return family_of(dialect.name).key_collation(dialect)


@compiles(KeyVarchar, *_MYSQL)
def _compile_key_varchar(
    type_: KeyVarchar, compiler: sa.sql.compiler.TypeCompiler, **kw: object
) -> str:
    # The collation depends on the server, so it is chosen when the DDL is compiled on a
    # connection, not when this module is imported.
    collation = _key_collation(compiler.dialect)
    return compiler.process(mysql.VARCHAR(type_.length, collation=collation), **kw)


@compiles(KeyMediumText, *_MYSQL)
def _compile_key_mediumtext(
    type_: KeyMediumText, compiler: sa.sql.compiler.TypeCompiler, **kw: object
) -> str:
    return compiler.process(mysql.MEDIUMTEXT(collation=_key_collation(compiler.dialect)), **kw)


KEY_TYPES = (KeyVarchar, KeyMediumText)
Text = sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)
KeyText = sa.Text().with_variant(KeyVarchar(MYSQL_RUN_KEY_CHARS), *_MYSQL)
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
ColumnKey = sa.Text().with_variant(KeyVarchar(MYSQL_MAPPING_KEY_CHARS), *_MYSQL)
Name = sa.Text().with_variant(KeyVarchar(64), *_MYSQL)
# Run ids of failed pairs: any length (a failure may be about an overlong name), compared exactly.
LongKeyText = sa.Text().with_variant(KeyMediumText(), *_MYSQL)

CORE_TYPES: dict[str, sa.types.TypeEngine[Any]] = {column: Text for column in CORE_COLUMNS} | {
    "project_id": KeyText,
    "run_name": KeyText,
    "gpu_svr_code": sa.BigInteger(),
    "fetched_at": Timestamp,
    "create_time": Timestamp,
    "update_time": Timestamp,
    GONE_COLUMN: Timestamp,
}


def refuse_foreign_table(conn: Connection, table: str) -> bool:
    """:class:`DatabaseError` naming what is wrong if ``table`` exists but is not one of ours;
    whether it exists otherwise."""
    inspector = sa.inspect(conn)
    if table in inspector.get_view_names():
        problems = ["it is a view"]
    elif not inspector.has_table(table):
        return False
    else:
        primary_key = inspector.get_pk_constraint(table)["constrained_columns"]
        columns = {c["name"].lower(): c["type"] for c in inspector.get_columns(table)}
        problems = foreign_table_problems(primary_key, columns, conn.dialect)
    if problems:
        raise DatabaseError(
            f"table {table} exists but is not an nsml-etl table: {'; '.join(problems)}; "
            "choose another --table (nsml-etl changes no table it did not make)"
        )
    return True


# What each core column must hold in an existing table (its type family, not its exact type:
# tables made by earlier versions, or on another database, differ in the details).
_FAMILY_WORDS = {
    "text": "a text type",
    "integer": "an integer type",
    "timestamp": "a date and time type",
}


def _type_family(column_type: sa.types.TypeEngine[Any]) -> str | None:
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.DateTime):
        return "timestamp"
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum | mysql.SET):
        return "text"
    return None


def _type_text(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    if isinstance(column_type, sa.types.NullType):
        return "of a type nsml-etl does not know (or none)"
    try:
        return column_type.compile(dialect=dialect)
    except SQLAlchemyError:
        return type(column_type).__name__


def foreign_table_problems(
    primary_key: list[str], columns: dict[str, sa.types.TypeEngine[Any]], dialect: sa.Dialect
) -> list[str]:
    """What makes an existing table (its primary key, its columns by lower-case name) other
    than a runs table of ours: the key must be (project_id, run_name), and each core column
    present must have the family of its type in :data:`CORE_TYPES`. Empty for our tables."""
    problems = []
    if [c.lower() for c in primary_key] != list(KEY_COLUMNS):
        found = f"is ({', '.join(primary_key)})" if primary_key else "is missing"
        problems.append(f"its primary key {found}, not ({', '.join(KEY_COLUMNS)})")
    for column in CORE_COLUMNS:
        found_type = columns.get(column)
        expected = _type_family(CORE_TYPES.get(column, Text))
        assert expected is not None  # every core column has one of the families
        if found_type is not None and _type_family(found_type) != expected:
            problems.append(
                f"column {column} is {_type_text(found_type, dialect)}, "
                f"not {_FAMILY_WORDS[expected]}"
            )
    return problems


def mapping_table(name: str, key_column: str, metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("table_name", Name, primary_key=True),
        sa.Column(key_column, ColumnKey, primary_key=True),
        # NULL: the key has no column (see ColumnMap.waiting).
        sa.Column("column_name", Name, nullable=True),
        sa.UniqueConstraint("table_name", "column_name"),
        **UTF8MB4,
    )


def _id_column(family: Family, table: str) -> sa.Column[Any]:
    # SQLite auto-increments only an INTEGER PRIMARY KEY; elsewhere a BIGINT identity, or the
    # family's sequence as the column's default (raw INSERT ... SELECTs fill it too).
    sequence = family.id_sequence(table)
    extra: list[Any] = [] if sequence is None else [sequence]
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        *extra,
        primary_key=True,
        autoincrement=True,
        server_default=None if sequence is None else sequence.next_value(),
    )


def batch_tables(metadata: sa.MetaData, family: Family) -> tuple[sa.Table, sa.Table]:
    """One row per export or load, and one per pair that failed in it."""
    batches = sa.Table(
        BATCHES_TABLE,
        metadata,
        _id_column(family, BATCHES_TABLE),
        sa.Column("table_name", Name, nullable=False),
        sa.Column("command", Name, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("status", Name, nullable=False),
        sa.Column("requested", sa.BigInteger()),
        sa.Column("exported", sa.BigInteger()),
        sa.Column("failed", sa.BigInteger()),
        sa.Column("retried", sa.BigInteger()),
        sa.Column("options", Text),
        # Why a 'failed' batch failed. Added to tables made before it (etl.warehouse.migrations).
        sa.Column("error", Text),
        **UTF8MB4,
    )
    failures = sa.Table(
        FAILURES_TABLE,
        metadata,
        _id_column(family, FAILURES_TABLE),
        sa.Column(
            "batch_id",
            sa.BigInteger(),
            sa.ForeignKey(f"{BATCHES_TABLE}.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("project_id", LongKeyText),
        sa.Column("run_name", LongKeyText),
        sa.Column("http_status", sa.Integer()),
        sa.Column("error_code", Name),
        sa.Column("message", Text),
        sa.Column("attempts", sa.Integer()),
        **UTF8MB4,
    )
    return batches, failures


def history_table(metadata: sa.MetaData, family: Family) -> sa.Table:
    """Type-2 history: one row per version of a run; ``valid_to`` NULL marks the current one."""
    return sa.Table(
        HISTORY_TABLE,
        metadata,
        _id_column(family, HISTORY_TABLE),
        sa.Column("table_name", Name, nullable=False),
        sa.Column("project_id", KeyText, nullable=False),
        sa.Column("run_name", KeyText, nullable=False),
        sa.Column("valid_from", Timestamp, nullable=False),
        sa.Column("valid_to", Timestamp),
        sa.Column("batch_id", sa.BigInteger()),
        sa.Column("status", Text),
        # The run's row as it was, as JSON: written when the version is superseded. NULL for
        # the current version, whose content is the row in the runs table (this keeps a first
        # load from writing every run twice).
        sa.Column("content", Text),
        sa.Index("ix_nsml_run_history_run", "table_name", "project_id", "run_name", "valid_to"),
        **UTF8MB4,
    )


def node_tables(metadata: sa.MetaData, family: Family) -> tuple[sa.Table, sa.Table]:
    """Each run's current nodes (key: the run's and the node's id, compared exactly), and their
    type-2 history as :func:`history_table` keeps the runs': one row per version of a node,
    ``valid_to`` NULL for the current one, ``content`` the node's row once superseded. On MySQL
    the three keys of 255 characters fill InnoDB's 3,072-byte index entry."""
    nodes = sa.Table(
        NODES_TABLE,
        metadata,
        sa.Column("project_id", KeyText, primary_key=True),
        sa.Column("run_name", KeyText, primary_key=True),
        sa.Column("node_id", KeyText, primary_key=True),
        sa.Column("state", Text),
        sa.Column("resource_type", Text),
        sa.Column("container_image", Text),
        sa.Column("rank", sa.BigInteger()),
        sa.Column("exit_code", sa.BigInteger()),
        sa.Column("host", Text),
        sa.Column("fields", Text),
        **UTF8MB4,
    )
    history = sa.Table(
        NODE_HISTORY_TABLE,
        metadata,
        _id_column(family, NODE_HISTORY_TABLE),
        sa.Column("project_id", KeyText, nullable=False),
        sa.Column("run_name", KeyText, nullable=False),
        sa.Column("node_id", KeyText, nullable=False),
        sa.Column("valid_from", Timestamp, nullable=False),
        sa.Column("valid_to", Timestamp),
        sa.Column("batch_id", sa.BigInteger()),
        sa.Column("state", Text),
        sa.Column("exit_code", sa.BigInteger()),
        # The node's row as it was, as JSON, once superseded (changed, or gone from the list);
        # NULL for the current version, whose content is the row in nsml_run_nodes.
        sa.Column("content", Text),
        sa.Index("ix_nsml_run_node_history_run", "project_id", "run_name"),
        **UTF8MB4,
    )
    return nodes, history


def key_columns(runs_table: str, tables: sa.MetaData, dialect: sa.Dialect) -> dict[str, set[str]]:
    """The columns compared as keys on MySQL (those of a :data:`KEY_TYPES`) of runs table
    ``runs_table`` and of ``tables``, by table; none elsewhere."""
    runs = sa.Table(
        runs_table,
        sa.MetaData(),
        *(sa.Column(c, CORE_TYPES[c], primary_key=True) for c in KEY_COLUMNS),
    )
    return {
        table.name: keys
        for table in (runs, *tables.sorted_tables)
        if (
            keys := {
                c.name for c in table.columns if isinstance(c.type.dialect_impl(dialect), KEY_TYPES)
            }
        )
    }
