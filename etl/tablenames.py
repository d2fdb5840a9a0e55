"""The names nsml-etl takes in a database: its own tables, and what the reporting views of a
runs table are called, so that no runs table is ever named like one of them. Pure (the settings
check table names with it, and must not pull in SQLAlchemy).

Views are read from the files: every ``.sql`` file in ``sql/`` is one view, so a file added
there follows these rules without being listed anywhere.

* The default table ``nsml_runs`` keeps the files' names: ``nsml_active_runs`` (the names
  dashboards already use).
* Any other table ``T`` gets ``T__`` plus the file's name without its ``nsml_`` prefix:
  ``team_a__active_runs``. Where that would pass 63 characters, ``T`` is cut short and ends with
  8 hex digits of its SHA-256, so two tables still never share a view.
* Table names may not contain ``__`` and may not be a view of the default table, so no table
  is ever named like a view, and views of two tables never replace each other.
* Nor may they start like a database's catalog tables (``pg_``, ``sqlite_``): those are the
  database's own.
"""

from __future__ import annotations

from importlib import resources

from .columnnames import HASH_DIGITS, MAX_IDENTIFIER_LENGTH, key_hash

# The runs table when none is named (settings take their default from here).
DEFAULT_TABLE = "nsml_runs"
# The bookkeeping tables, shared by every runs table of a database.
ENV_COLUMNS_TABLE = "nsml_env_columns"
FIELD_COLUMNS_TABLE = "nsml_field_columns"
BATCHES_TABLE = "nsml_export_batches"
HISTORY_TABLE = "nsml_run_history"
FAILURES_TABLE = "nsml_export_failures"
GPU_SERVERS_TABLE = "nsml_gpu_servers"
CALENDAR_TABLE = "nsml_calendar"  # the days of the day views (etl/reporting/calendar.py)
# Each run's nodes (export --nodes), and their change history; shared by every runs table of a
# database, as a run's nodes are the run's whichever table it lands in.
NODES_TABLE = "nsml_run_nodes"
NODE_HISTORY_TABLE = "nsml_run_node_history"
# The temporary table each chunk is staged in.
STAGE_TABLE = "nsml_etl_stage"
# Exporting runs into one of our own tables would corrupt it.
RESERVED_TABLES = frozenset(
    {
        ENV_COLUMNS_TABLE,
        FIELD_COLUMNS_TABLE,
        BATCHES_TABLE,
        HISTORY_TABLE,
        FAILURES_TABLE,
        GPU_SERVERS_TABLE,
        CALENDAR_TABLE,
        NODES_TABLE,
        NODE_HISTORY_TABLE,
        STAGE_TABLE,
    }
)

# Names the databases keep for their catalogs: SQLite refuses to create a table named sqlite_*,
# and PostgreSQL looks pg_catalog up before any other schema, so a table pg_class would be
# read as the catalog's (and a pg_* name may become a catalog table in a later release).
# MySQL and MariaDB keep databases (mysql, information_schema, ...), not table names.
CATALOG_PREFIXES = ("pg_", "sqlite_")

SQL_PACKAGE = "nsml_etl_sql"
# Every view file is named nsml_<what>.sql; other tables replace the prefix with their own.
FILE_PREFIX = "nsml_"
# Between a table's name and the view's: table names may not contain it (see module doc).
SEPARATOR = "__"


def view_bases() -> list[str]:
    """The views the ``sql/`` files define (``name.sql`` and ``name.<dialect>.sql`` are one
    view ``name``), sorted."""
    names = (f.name for f in resources.files(SQL_PACKAGE).iterdir() if f.name.endswith(".sql"))
    return sorted({name.split(".")[0] for name in names})


def view_name(table: str, base: str) -> str:
    """The name of view ``base`` (a file's name) for runs table ``table``."""
    if table == DEFAULT_TABLE:
        return base
    rest = base.removeprefix(FILE_PREFIX)
    budget = MAX_IDENTIFIER_LENGTH - len(SEPARATOR) - len(rest)
    prefix = table
    if len(prefix) > budget:
        prefix = table[: budget - HASH_DIGITS - 1].rstrip("_") + "_" + key_hash(table)
    return prefix + SEPARATOR + rest


def default_view_names() -> frozenset[str]:
    """The default table's view names, which no table may take."""
    return frozenset(view_name(DEFAULT_TABLE, base) for base in view_bases())
