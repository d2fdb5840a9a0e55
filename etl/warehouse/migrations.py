"""The layouts earlier versions of nsml-etl left behind, brought up to date in place, once.

The schema's evolution (:meth:`etl.warehouse.schema.Schema.prepare`) calls each of these under
the table's lock, on every schema change: each reads the tables first and changes nothing that
is already current, so a database made by any earlier version keeps working.

1. Key columns made without an exact collation (MySQL and MariaDB: ``utf8mb4_bin`` pads
   trailing spaces, so ``'r1 '`` was ``'r1'``) get it: :func:`exact_key_collations`.
2. Mapping tables from before keys could wait without a column have a NOT NULL
   ``column_name``: :func:`allow_waiting_keys` lifts it.
3. History tables of nsml-etl 0.1 have a NOT NULL ``content_hash`` that nothing reads:
   :func:`has_content_hash` finds it, and the writer gives it an empty string.
4. Bookkeeping tables made before one of their columns existed (``nsml_export_batches.error``)
   get it: :func:`add_new_columns`.
5. Runs tables made before a fixed column (``gone_at``) existed: :func:`missing_fixed_columns`
   names what the schema adds, and :func:`refuse_gone_column_clash` refuses a table that gave
   that name to an undocumented field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import DatabaseError
from ..tablenames import HISTORY_TABLE
from ..transform import CORE_COLUMNS, GONE_COLUMN
from .families import Family
from .tables import key_columns

log = logging.getLogger("nsml_etl.schema")  # these steps' messages were the schema's


def exact_key_collations(
    conn: Connection, family: Family, runs_table: str, tables: sa.MetaData
) -> None:
    """Give the key columns of runs table ``runs_table`` and of ``tables`` the family's exact
    collation where an earlier version made them without it
    (:meth:`etl.warehouse.families.Family.migrate_key_collations`)."""
    family.migrate_key_collations(conn, key_columns(runs_table, tables, conn.dialect))


def allow_waiting_keys(
    conn: Connection, inspector: sa.Inspector, family: Family, mappings: Iterable[sa.Table]
) -> None:
    """Mapping tables made before keys could wait have a NOT NULL column_name: lift it."""
    for mapping in mappings:
        column = next(c for c in inspector.get_columns(mapping.name) if c["name"] == "column_name")
        if column["nullable"]:
            continue
        family.make_nullable(conn, mapping, "column_name")
        log.info("%s: keys may now wait without a column", mapping.name)


def has_content_hash(inspector: sa.Inspector) -> bool:
    """Whether the history table is nsml-etl 0.1's, with its NOT NULL ``content_hash``."""
    return "content_hash" in {c["name"].lower() for c in inspector.get_columns(HISTORY_TABLE)}


def refuse_gone_column_clash(runs_table: str, fields: Mapping[str, str]) -> None:
    """A table made before ``gone_at`` may have given that name to an undocumented field
    (``goneAt``; ``fields``: the field columns by field): refused rather than written twice."""
    if GONE_COLUMN in fields.values():
        raise DatabaseError(
            f"column {GONE_COLUMN} of table {runs_table} holds an undocumented field, "
            f"and nsml-etl now needs that name for its own {GONE_COLUMN}; export into a new "
            "--table"
        )


def add_new_columns(conn: Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    """Columns of a bookkeeping table added since an existing copy of it was made."""
    existing = {c["name"].lower() for c in inspector.get_columns(table.name)}
    quote = conn.dialect.identifier_preparer.quote
    for column in table.columns:
        if column.name not in existing:
            column_type = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(
                f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column_type}"
            )


def missing_fixed_columns(existing: set[str]) -> list[str]:
    """The fixed columns (:data:`etl.transform.CORE_COLUMNS`) a runs table with columns
    ``existing`` (lower case) lacks: added to nsml-etl since the table was made."""
    return [column for column in CORE_COLUMNS if column not in existing]
