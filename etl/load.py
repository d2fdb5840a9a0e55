"""The target database: engine, tables, schema evolution and the dialect-native upsert.

Contract, the same on SQLite, PostgreSQL and MySQL/MariaDB:

* the runs table has primary key ``(project_id, run_name)``, the fixed columns of
  :data:`etl.transform.CORE_COLUMNS`, one ``env_*`` column per env key ever seen and one column
  per undocumented top-level field;
* ``nsml_env_columns`` and ``nsml_field_columns`` remember which column each key got; a key's
  column never changes and no column is ever dropped or renamed;
* schema changes and chunk writes run under one lock per table (SQLite's write lock, a
  PostgreSQL advisory lock, MySQL ``GET_LOCK``); schema changes re-read the schema after taking
  it, so two exports adding the same key at once agree, and two exports writing the same runs
  take turns, so their change history stays one version after another;
* a mapping row is committed before its column is added, so MySQL's implicit commit on DDL can
  never leave a column nobody owns: a mapped column that is missing is simply added next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles

from . import jsontext
from .config import DEFAULT_MAX_ENV_COLUMNS
from .dialects import (
    MYSQL_MAPPING_KEY_CHARS,
    MYSQL_RUN_KEY_CHARS,
    Family,
    error_kind,
    family_of,
    first_line,
    is_lock_timeout,
)
from .errors import DatabaseError, InputError, MappingChanged
from .events import event
from .naming import allocate_columns, allocation_order, snake_case
from .pairs import Pair
from .transform import (
    CORE_COLUMNS,
    GONE_COLUMN,
    KEY_COLUMNS,
    LIST_TIME_COLUMNS,
    OBSERVATION_COLUMNS,
    TERMINAL_STATUSES,
    FlatRun,
    as_text,
    env_keys,
    extra_fields,
)
from .urls import redact_url

log = logging.getLogger(__name__)

ENV_COLUMNS_TABLE = "nsml_env_columns"
FIELD_COLUMNS_TABLE = "nsml_field_columns"
BATCHES_TABLE = "nsml_export_batches"
HISTORY_TABLE = "nsml_run_history"
# Run names per SELECT when reading the stored rows that a chunk supersedes.
HISTORY_LOOKUP_KEYS = 1000
FAILURES_TABLE = "nsml_export_failures"
# The temporary table a chunk is staged in before it is merged.
STAGE = "nsml_etl_stage"
# How long SQLite waits for another writer (an overlapping cron job) before giving up.
SQLITE_BUSY_TIMEOUT_S = 60
# How long MySQL waits for another export's schema change or chunk write.
MYSQL_LOCK_TIMEOUT_S = 60
# How long one schema change (ALTER TABLE) waits for its table lock. A transaction left open on
# the table (a dashboard, a SQL console) holds it off, and every new query on the table queues
# behind the waiting ALTER: those stall this long at most, then run while we wait to retry.
SCHEMA_LOCK_TIMEOUT_S = 3.0
# Schema changes tried this often before the export stops with exit 4; the waits in between
# start here and double (1, 2, 4 s: about 20 s in all with the lock waits).
SCHEMA_LOCK_ATTEMPTS = 4
SCHEMA_LOCK_RETRY_WAIT_S = 1.0
# The share of MySQL's max_allowed_packet one run's escaped text may take: the rest is the
# statement around it (column names, the other runs of a multi-row INSERT stay under 1 MB).
PACKET_SHARE_FOR_ONE_RUN = 0.9
# Characters PyMySQL sends with a backslash before them.
_ESCAPED_BY_DRIVER = ("\\", "'", '"', "\n", "\r", "\x00", "\x1a")
# Undocumented top-level fields that get a column of their own, per table; the others are in
# the fields column only. With the default env cap this still fits a MariaDB row (see
# config.DEFAULT_MAX_ENV_COLUMNS: 138 text columns besides the fixed ones).
MAX_FIELD_COLUMNS = 30
# Stored runs read per query when a new column is filled from their envs.
FILL_PAGE_ROWS = 2000

# URL backend -> (driver we use, extra that installs it)
BACKENDS = {
    "sqlite": ("pysqlite", None),
    "postgresql": ("psycopg", "postgres"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
}

_MYSQL = ("mysql", "mariadb")
# Table options for every table we create: MySQL's utf8 is not full UTF-8.
UTF8MB4 = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}
TIMESTAMP_COLUMNS = ("fetched_at", *LIST_TIME_COLUMNS, GONE_COLUMN)
# Binary collations without trailing-space padding, for every identifier compared as a key:
# under utf8mb4_bin (PAD SPACE) 'r1 ' equals 'r1', so the second run overwrote the first.
MARIADB_KEY_COLLATION = "utf8mb4_nopad_bin"  # MariaDB 10.2 and later
MYSQL_KEY_COLLATION = "utf8mb4_0900_bin"  # MySQL 8.0.17 and later
MARIADB_KEY_COLLATION_SINCE = (10, 2)
MYSQL_KEY_COLLATION_SINCE = (8, 0, 17)


def key_collation(dialect: sa.Dialect) -> str:
    """The exact (binary, NO PAD) collation of the MySQL or MariaDB server ``dialect`` is
    connected to; :class:`DatabaseError` for a server too old to have one."""
    version = tuple(v for v in dialect.server_version_info or () if isinstance(v, int))
    if dialect.is_mariadb:
        if version >= MARIADB_KEY_COLLATION_SINCE:
            return MARIADB_KEY_COLLATION
        wanted = "MariaDB 10.2"
    else:
        if version >= MYSQL_KEY_COLLATION_SINCE:
            return MYSQL_KEY_COLLATION
        wanted = "MySQL 8.0.17"
    raise DatabaseError(
        f"the database server ({'.'.join(map(str, version))}) has no binary NO PAD collation, "
        f"so run names differing only by trailing spaces would be one run; use {wanted} or later"
    )


class KeyVarchar(mysql.VARCHAR):
    """A MySQL string compared as a key: created with the server's :func:`key_collation`."""


class KeyMediumText(mysql.MEDIUMTEXT):
    """A long MySQL string compared as a key: created with the server's :func:`key_collation`."""


@compiles(KeyVarchar, *_MYSQL)
def _compile_key_varchar(type_: KeyVarchar, compiler: sa.sql.compiler.TypeCompiler,
                         **kw: object) -> str:
    # The collation depends on the server, so it is chosen when the DDL is compiled on a
    # connection, not when this module is imported.
    collation = key_collation(compiler.dialect)
    return compiler.process(mysql.VARCHAR(type_.length, collation=collation), **kw)


@compiles(KeyMediumText, *_MYSQL)
def _compile_key_mediumtext(type_: KeyMediumText, compiler: sa.sql.compiler.TypeCompiler,
                            **kw: object) -> str:
    return compiler.process(mysql.MEDIUMTEXT(collation=key_collation(compiler.dialect)), **kw)


KEY_TYPES = (KeyVarchar, KeyMediumText)
# A column type as information_schema spells it (varchar(255), mediumtext): safe to reuse in DDL.
_PLAIN_COLUMN_TYPE = re.compile(r"[a-z]+(\([0-9]+\))?")
Text = sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)
KeyText = sa.Text().with_variant(KeyVarchar(MYSQL_RUN_KEY_CHARS), *_MYSQL)
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
ColumnKey = sa.Text().with_variant(KeyVarchar(MYSQL_MAPPING_KEY_CHARS), *_MYSQL)
Name = sa.Text().with_variant(KeyVarchar(64), *_MYSQL)
# Run ids of failed pairs: any length (a failure may be about an overlong name), compared exactly.
LongKeyText = sa.Text().with_variant(KeyMediumText(), *_MYSQL)

CORE_TYPES: dict[str, sa.types.TypeEngine] = {
    column: Text for column in CORE_COLUMNS
} | {
    "project_id": KeyText,
    "run_name": KeyText,
    "gpu_svr_code": sa.BigInteger(),
    "fetched_at": Timestamp,
    "create_time": Timestamp,
    "update_time": Timestamp,
    GONE_COLUMN: Timestamp,
}


def _describe(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database or ':memory:'}"
    where = f"{url.host or 'localhost'}{':' + str(url.port) if url.port else ''}"
    return f"{url.get_backend_name()} database {url.database!r} on {where}"


def create_engine(db_url: str) -> Engine:
    """An engine for a supported URL; :class:`DatabaseError` (exit 4) names what is wrong."""
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise InputError(
            f"--db: {redact_url(db_url)!r} is not a database URL; expected e.g. "
            "sqlite:///nsml_runs.db or postgresql+psycopg://user@host/db"
        ) from None
    backend = url.get_backend_name()
    if backend not in BACKENDS:
        raise DatabaseError(
            f"--db {redact_url(db_url)}: unsupported database {backend!r}; "
            f"use one of: {', '.join(BACKENDS)}"
        )
    driver, extra = BACKENDS[backend]
    if url.drivername == backend:  # plain postgresql:// or mysql://: pick the driver we ship
        url = url.set(drivername=f"{backend}+{driver}")
    kwargs: dict = {"hide_parameters": True}  # SQL errors must not echo run data
    if backend in _MYSQL:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError):
        asked = url.get_driver_name()
        if asked != driver:
            hint = f"use {backend}+{driver}:// with pip install 'nsml-etl[{extra}]'"
        else:
            hint = f"pip install 'nsml-etl[{extra}]'"
        raise DatabaseError(
            f"--db {redact_url(db_url)}: the {asked} database driver is not installed; {hint}"
        ) from None
    except (ArgumentError, ValueError, TypeError) as exc:
        raise DatabaseError(f"--db {redact_url(db_url)}: {exc}") from None
    if backend == "sqlite":
        _make_sqlite_transactional(engine)
    return engine


def _make_sqlite_transactional(engine: Engine) -> None:
    # pysqlite commits before DDL and begins lazily; SQLAlchemy's documented recipe takes
    # over so every transaction (DDL included) is real, and BEGIN IMMEDIATE takes the write
    # lock up front, which serializes overlapping exports instead of deadlocking them.
    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None
        # Each chunk is staged in a temporary table: keep it in memory, not in a temp file.
        dbapi_connection.execute("PRAGMA temp_store = MEMORY")

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection):  # noqa: ANN001
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def check_database(engine: Engine) -> None:
    """Connect once, before any API request, so a wrong URL fails fast and touches nothing."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            if not path.exists():  # do not create the file just to check it
                parent = path.parent if str(path.parent) else Path(".")
                if not parent.is_dir():
                    raise DatabaseError(f"{_describe(url)}: directory {parent} does not exist")
                if not os.access(parent, os.W_OK):
                    raise DatabaseError(f"{_describe(url)}: directory {parent} is not writable")
                return
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot connect to {_describe(url)}: {first_line(exc)}") from None


def check_table(engine: Engine, table: str) -> None:
    """Before any request, refuse a runs table nsml-etl did not make, changing nothing (another
    tool's ``nsml_runs`` would get our columns added, or its rows duplicated on every rerun);
    on MySQL and MariaDB, refuse a server without an exact collation for run names too."""
    if _sqlite_file_missing(engine.url):
        return  # a new database: nothing there yet, and connecting would create the file
    try:
        with engine.connect() as conn:
            if engine.dialect.name in _MYSQL:
                key_collation(conn.dialect)
            refuse_foreign_table(conn, table)
            conn.rollback()
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"reading the schema of table {table} failed: {first_line(exc)}") from None


def refuse_foreign_table(conn: Connection, table: str) -> None:
    """:class:`DatabaseError` naming what is wrong if ``table`` exists but is not one of ours."""
    inspector = sa.inspect(conn)
    if table in inspector.get_view_names():
        problems = ["it is a view"]
    elif not inspector.has_table(table):
        return
    else:
        primary_key = inspector.get_pk_constraint(table)["constrained_columns"]
        columns = {c["name"].lower(): c["type"] for c in inspector.get_columns(table)}
        problems = foreign_table_problems(primary_key, columns, conn.dialect)
    if problems:
        raise DatabaseError(
            f"table {table} exists but is not an nsml-etl table: {'; '.join(problems)}; "
            "choose another --table (nsml-etl changes no table it did not make)"
        )


def _sqlite_file_missing(url: sa.URL) -> bool:
    database = url.database
    return (url.get_backend_name() == "sqlite" and bool(database) and database != ":memory:"
            and not database.startswith("file:") and not Path(database).exists())


# What each core column must hold in an existing table (its type family, not its exact type:
# tables made by earlier versions, or on another database, differ in the details).
_FAMILY_WORDS = {"text": "a text type", "integer": "an integer type",
                 "timestamp": "a date and time type"}


def _type_family(column_type: sa.types.TypeEngine) -> str | None:
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.DateTime):
        return "timestamp"
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum | mysql.SET):
        return "text"
    return None


def _type_text(column_type: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    if isinstance(column_type, sa.types.NullType):
        return "of a type nsml-etl does not know (or none)"
    try:
        return column_type.compile(dialect=dialect)
    except SQLAlchemyError:
        return type(column_type).__name__


def foreign_table_problems(primary_key: list[str], columns: dict[str, sa.types.TypeEngine],
                           dialect: sa.Dialect) -> list[str]:
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
        if found_type is not None and _type_family(found_type) != expected:
            problems.append(f"column {column} is {_type_text(found_type, dialect)}, "
                            f"not {_FAMILY_WORDS[expected]}")
    return problems


@dataclass(frozen=True)
class ColumnMap:
    """Which column each env key and extra field lands in (insertion order = table order).

    ``waiting``: env keys that have no column (beyond --max-env-columns, or their column could
    not be added); their values are in ``envs`` and the ``nsml_run_envs`` view.
    ``waiting_fields``: the same for undocumented fields (beyond :data:`MAX_FIELD_COLUMNS`);
    their values are in the ``fields`` column."""

    env: dict[str, str]
    fields: dict[str, str]
    waiting: frozenset[str] = frozenset()
    waiting_fields: frozenset[str] = frozenset()  # their values are in the fields column

    @property
    def columns(self) -> list[str]:
        return [*CORE_COLUMNS, *self.env.values(), *self.fields.values()]


def _mapping_table(name: str, key_column: str, metadata: sa.MetaData) -> sa.Table:
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


def _id_column() -> sa.Column:
    # SQLite auto-increments only an INTEGER PRIMARY KEY; elsewhere a BIGINT identity.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                     primary_key=True, autoincrement=True)


def _batch_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """One row per export or load, and one per pair that failed in it."""
    batches = sa.Table(
        BATCHES_TABLE,
        metadata,
        _id_column(),
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
        # Why a 'failed' batch failed. Added to tables made before it (see _evolve).
        sa.Column("error", Text),
        **UTF8MB4,
    )
    failures = sa.Table(
        FAILURES_TABLE,
        metadata,
        _id_column(),
        sa.Column("batch_id", sa.BigInteger(), sa.ForeignKey(f"{BATCHES_TABLE}.id"),
                  nullable=False, index=True),
        sa.Column("project_id", LongKeyText),
        sa.Column("run_name", LongKeyText),
        sa.Column("http_status", sa.Integer()),
        sa.Column("error_code", Name),
        sa.Column("message", Text),
        sa.Column("attempts", sa.Integer()),
        **UTF8MB4,
    )
    return batches, failures


def _history_table(metadata: sa.MetaData) -> sa.Table:
    """Type-2 history: one row per version of a run; ``valid_to`` NULL marks the current one."""
    return sa.Table(
        HISTORY_TABLE,
        metadata,
        _id_column(),
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


def _lock_key(table: str) -> int:
    digest = hashlib.sha256(f"nsml-etl table {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RunStore:
    """The runs table of one database: keeps its schema in step and upserts chunks into it."""

    def __init__(self, engine: Engine, table: str,
                 max_env_columns: int = DEFAULT_MAX_ENV_COLUMNS) -> None:
        self.engine = engine
        self.table_name = table
        self.dialect = engine.dialect.name
        self.family: Family = family_of(self.dialect)
        self.max_env_columns = max_env_columns
        self._metadata = sa.MetaData()
        self.env_table = _mapping_table(ENV_COLUMNS_TABLE, "env_key", self._metadata)
        self.field_table = _mapping_table(FIELD_COLUMNS_TABLE, "field", self._metadata)
        self.batches_table, self.failures_table = _batch_tables(self._metadata)
        self.history_table = _history_table(self._metadata)
        # Columns seen in the table (or added by us). A mapping row can be visible before its
        # column exists (MySQL commits the mapping before its DDL), so a mapped column not in
        # here sends us through the locked path, which waits for the other export's ALTER.
        self._known_columns: set[str] = set()
        # History tables made by nsml-etl 0.1 before this change have a NOT NULL content_hash
        # that nothing reads any more; it gets an empty string so those databases keep working.
        self._legacy_content_hash = False
        self._packet_limit: int | None = None
        self._sql_tables: dict[tuple[str, ...], sa.Table] = {}

    # -- schema --------------------------------------------------------------------------

    def _runs_table(self, columns: Iterable[str]) -> sa.Table:
        columns = tuple(columns)
        table = self._sql_tables.get(columns)
        if table is None:
            table = sa.Table(
                self.table_name,
                sa.MetaData(),
                *(
                    sa.Column(c, CORE_TYPES.get(c, Text), primary_key=c in KEY_COLUMNS)
                    for c in columns
                ),
                **UTF8MB4,
            )
            self._sql_tables = {columns: table}  # only the latest shape is worth keeping
        return table

    def read_mapping(self, conn: Connection) -> ColumnMap:
        def read(table: sa.Table, key: str) -> dict[str, str | None]:
            query = (
                sa.select(table.c[key], table.c.column_name)
                .where(table.c.table_name == self.table_name)
                .order_by(table.c.column_name)
            )
            return {key: column for key, column in conn.execute(query)}

        if not sa.inspect(conn).has_table(ENV_COLUMNS_TABLE):
            return ColumnMap({}, {})
        env = read(self.env_table, "env_key")
        fields = read(self.field_table, "field")
        return ColumnMap(
            {k: c for k, c in env.items() if c is not None},
            {k: c for k, c in fields.items() if c is not None},
            frozenset(k for k, c in env.items() if c is None),
            frozenset(k for k, c in fields.items() if c is None),
        )

    def _room_for_waiting(self, current: ColumnMap) -> bool:
        return bool(current.waiting) and len(current.env) < self.max_env_columns

    @contextmanager
    def _table_lock(self) -> Iterator[Connection]:
        """A connection in a transaction that holds this table's write lock, committed on
        success. SQLite needs none: BEGIN IMMEDIATE serializes writers.

        One lock for schema changes and chunk writes alike: an ALTER TABLE waiting for a
        chunk's transaction blocks that transaction's next, stronger table lock (MariaDB's
        metadata locks, PostgreSQL's table locks), and the database kills the chunk as a
        deadlock; two chunks of the same runs at once would both close and open versions."""
        key = _lock_key(self.table_name)
        mysql_lock = f"nsml-etl:{key}"  # MySQL lock names end at 64 characters; tables do not
        with self.engine.connect() as conn:  # SQLite: the first statement takes BEGIN IMMEDIATE
            if self.dialect in _MYSQL:
                got = conn.execute(
                    sa.text("SELECT GET_LOCK(:name, :timeout)"),
                    {"name": mysql_lock, "timeout": MYSQL_LOCK_TIMEOUT_S},
                ).scalar()
                conn.commit()
                if got != 1:
                    raise DatabaseError(
                        f"timed out after {MYSQL_LOCK_TIMEOUT_S}s waiting for another export's "
                        f"lock on table {self.table_name}"
                    )
            elif self.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": key},
                )
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                if self.dialect in _MYSQL:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": mysql_lock})
                    conn.commit()

    def prepare(self, env_keys: Iterable[str], fields: Iterable[str]) -> ColumnMap:
        """Make sure the tables and a column for every key exist (env keys up to the cap);
        return the current map."""
        env_keys, fields = set(env_keys), set(fields)
        if self._known_columns:
            with self.engine.connect() as conn:
                current = self.read_mapping(conn)
                conn.rollback()
            if (
                env_keys <= current.env.keys() | current.waiting
                and fields <= current.fields.keys() | current.waiting_fields
                and self._known_columns.issuperset(current.columns)
                and not self._room_for_waiting(current)
            ):
                return current
        for attempt in range(1, SCHEMA_LOCK_ATTEMPTS + 1):
            try:
                with self._table_lock() as conn, self._bounded_lock_waits(conn):
                    current = self._evolve(conn, env_keys, fields)
                break
            except SQLAlchemyError as exc:
                if not is_lock_timeout(exc):
                    raise DatabaseError(
                        f"schema change on table {self.table_name} failed: {first_line(exc)}"
                    ) from exc
                table = self._locked_table(exc)
                if attempt == SCHEMA_LOCK_ATTEMPTS:
                    raise DatabaseError(self._locked_message(table)) from None
                wait = SCHEMA_LOCK_RETRY_WAIT_S * 2 ** (attempt - 1)
                log.warning("table %s is locked by another session; adding columns again in "
                            "%gs (attempt %d of %d)", table, wait, attempt + 1,
                            SCHEMA_LOCK_ATTEMPTS)
                time.sleep(wait)
        self._known_columns = set(current.columns)
        return current

    @contextmanager
    def _bounded_lock_waits(self, conn: Connection) -> Iterator[None]:
        """Statements on ``conn`` wait at most SCHEMA_LOCK_TIMEOUT_S for a table lock (entered
        after the lock of :meth:`_table_lock`, which must keep waiting for other exports)."""
        if self.dialect == "postgresql":  # local: ends with the transaction
            conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"),
                         {"ms": str(max(1, round(SCHEMA_LOCK_TIMEOUT_S * 1000)))})
            yield
        elif self.dialect in _MYSQL:  # a session setting (metadata locks, whole seconds)
            conn.execute(sa.text("SET SESSION lock_wait_timeout = :s"),
                         {"s": max(1, math.ceil(SCHEMA_LOCK_TIMEOUT_S))})
            try:
                yield
            finally:
                try:  # the connection goes back to the pool: chunk writes wait as before
                    conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
                except SQLAlchemyError:
                    conn.invalidate()
        else:  # SQLite: SQLITE_BUSY_TIMEOUT_S bounds every wait
            yield

    def _locked_table(self, exc: SQLAlchemyError) -> str:
        """The table whose lock the failed statement waited for (it names it)."""
        statement = str(getattr(exc, "statement", "") or "")
        return BATCHES_TABLE if BATCHES_TABLE in statement else self.table_name

    @staticmethod
    def _locked_message(table: str) -> str:
        return (
            f"table {table} is locked by another session: adding columns to it waited "
            f"{SCHEMA_LOCK_TIMEOUT_S:g}s for the lock, {SCHEMA_LOCK_ATTEMPTS} times. Usually a "
            "transaction left open on it (a dashboard or SQL console; PostgreSQL shows it as "
            "'idle in transaction' in pg_stat_activity, MySQL in SHOW PROCESSLIST): end it, "
            "then run the export again; the runs committed before are kept"
        )

    def _evolve(self, conn: Connection, env_keys: set[str], fields: set[str]) -> ColumnMap:
        # Everything below is re-read under the lock: another export may have just done it.
        refuse_foreign_table(conn, self.table_name)  # made by another tool since the check?
        self._metadata.create_all(conn, checkfirst=True)
        self._runs_table(CORE_COLUMNS).create(conn, checkfirst=True)
        if self.dialect in _MYSQL:
            self._migrate_key_collations(conn)
        inspector = sa.inspect(conn)
        self._allow_waiting_keys(conn, inspector)
        current = self.read_mapping(conn)
        existing = {c["name"].lower() for c in inspector.get_columns(self.table_name)}
        self._legacy_content_hash = "content_hash" in {
            c["name"].lower() for c in inspector.get_columns(HISTORY_TABLE)}
        self._refuse_gone_column_clash(current)
        self._add_missing_columns(conn, self.batches_table, inspector)
        taken = existing | set(CORE_COLUMNS) | set(current.env.values())
        taken |= set(current.fields.values())

        # Env keys get columns up to the cap: keys that waited first, then new keys in the
        # order allocate_columns uses; the rest are recorded without a column.
        # Never past the database's own column limit, whatever the cap says.
        room = max(0, min(self.max_env_columns - len(current.env),
                          self.family.max_columns - len(existing)))
        promoted = sorted(current.waiting)[:room]
        new_keys = allocation_order(env_keys - current.env.keys() - current.waiting)
        with_column = new_keys[:room - len(promoted)]
        without_column = new_keys[len(with_column):]
        allocated = allocate_columns([*promoted, *with_column], taken)
        taken |= set(allocated.values())
        # Undocumented fields likewise, up to their own fixed cap (every value is also in the
        # fields column); a field that waits keeps waiting.
        field_room = max(0, min(MAX_FIELD_COLUMNS - len(current.fields),
                                self.family.max_columns - len(existing) - len(allocated)))
        unmapped = fields - current.fields.keys() - current.waiting_fields
        field_names = {f: snake_case(f) for f in unmapped}
        new_field_keys = allocation_order(unmapped, prefix="", preferred=field_names)
        new_fields = allocate_columns(new_field_keys[:field_room], taken, prefix="",
                                      preferred=field_names)
        env_rows = [{"env_key": k, "column_name": allocated.get(k)}
                    for k in (*with_column, *without_column)]
        field_rows = [{"field": k, "column_name": new_fields.get(k)} for k in new_field_keys]
        for table, rows in ((self.env_table, env_rows), (self.field_table, field_rows)):
            if rows:
                conn.execute(sa.insert(table), [{"table_name": self.table_name, **row}
                                                for row in rows])
        if promoted:
            table = self.env_table
            conn.execute(
                sa.update(table).where(table.c.table_name == self.table_name,
                                       table.c.env_key == sa.bindparam("key"))
                .values(column_name=sa.bindparam("column")),
                [{"key": k, "column": allocated[k]} for k in promoted],
            )
        if allocated or new_fields:
            log.info("new columns in %s: %s", self.table_name,
                     ", ".join([*allocated.values(), *new_fields.values()]))
        if not self.family.transactional_ddl and (env_rows or field_rows or promoted):
            conn.commit()  # the mapping must be durable before MySQL's DDL commits implicitly
        env = current.env | {k: allocated[k] for k in (*promoted, *with_column)}
        current = ColumnMap(env, current.fields | new_fields)
        for column in CORE_COLUMNS:  # a fixed column added since the table was made
            if column not in existing:
                self._add_column(conn, column)
        added_env: dict[str, str] = {}
        for key, column in list(current.env.items()):
            if column.lower() not in existing:
                if self._add_column_or_wait(conn, self.env_table, key, column):
                    added_env[key] = column
        for key, column in list(current.fields.items()):
            if column.lower() not in existing:
                self._add_column_or_wait(conn, self.field_table, key, column)
        current = self.read_mapping(conn)  # a column that could not be added is waiting now
        # A key that waited (or whose column went missing) may already have values in stored
        # runs: fill its new column from their envs.
        brand_new = set(with_column)
        refill = {k: c for k, c in added_env.items() if k not in brand_new}
        if refill:
            self._fill_from_envs(conn, refill)
        newly_waiting = len(without_column) + len(set(env) - current.env.keys())
        if newly_waiting:
            log.warning(
                "%d env keys of table %s have no column now (%d in all; --max-env-columns %d); "
                "their values are in envs and the nsml_run_envs view",
                newly_waiting, self.table_name, len(current.waiting), self.max_env_columns,
                extra=event("env_keys_without_column", table=self.table_name,
                            new=newly_waiting, total=len(current.waiting),
                            max_env_columns=self.max_env_columns))
        waiting_fields = len(new_field_keys) - len(new_fields)
        if waiting_fields:
            log.warning(
                "%d undocumented fields of table %s have no column (%d at most); their values "
                "are in its fields column", waiting_fields, self.table_name, MAX_FIELD_COLUMNS,
                extra=event("fields_without_column", table=self.table_name,
                            new=waiting_fields, total=len(current.waiting_fields),
                            max_field_columns=MAX_FIELD_COLUMNS))
        return current

    def _refuse_gone_column_clash(self, current: ColumnMap) -> None:
        """A table made before ``gone_at`` may have given that name to an undocumented field
        (``goneAt``): refused rather than written twice. (Missing fixed columns are added in
        :meth:`_evolve`.)"""
        if GONE_COLUMN in current.fields.values():
            raise DatabaseError(
                f"column {GONE_COLUMN} of table {self.table_name} holds an undocumented field, "
                f"and nsml-etl now needs that name for its own {GONE_COLUMN}; export into a new "
                "--table")

    def _key_columns(self, dialect: sa.Dialect) -> dict[str, list[sa.Column]]:
        """Our tables' columns compared as keys on MySQL (those of a :data:`KEY_TYPES`)."""
        runs = sa.Table(self.table_name, sa.MetaData(),
                        *(sa.Column(c, CORE_TYPES[c], primary_key=True) for c in KEY_COLUMNS))
        return {
            table.name: keys
            for table in (runs, *self._metadata.sorted_tables)
            if (keys := [c for c in table.columns
                         if isinstance(c.type.dialect_impl(dialect), KEY_TYPES)])
        }

    def _migrate_key_collations(self, conn: Connection) -> None:
        """Give key columns made before :func:`key_collation` existed (``utf8mb4_bin``, which
        pads trailing spaces, or the table's default collation) the exact one, in place, once;
        later runs only read ``information_schema``. Equality only gets stricter, so no
        primary or unique key (runs, mapping tables) can fail on duplicates: two values that
        were distinct before stay distinct."""
        collation = key_collation(conn.dialect)
        wanted = self._key_columns(conn.dialect)
        found = conn.execute(
            sa.text("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME "
                    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME IN :tables")
            .bindparams(sa.bindparam("tables", expanding=True)),
            {"tables": sorted(wanted)},
        ).all()
        changes: dict[str, list[tuple[str, str, str]]] = {}
        for table, column, column_type, nullable, current in found:
            keys = {c.name for c in wanted.get(table, ())}
            if (column in keys and current is not None and current != collation
                    and _PLAIN_COLUMN_TYPE.fullmatch(column_type)):
                changes.setdefault(table, []).append((column, column_type, nullable))
        quote = conn.dialect.identifier_preparer.quote
        for table, columns in changes.items():
            modify = ", ".join(
                f"MODIFY {quote(column)} {column_type} CHARACTER SET utf8mb4 "
                f"COLLATE {collation} {'NULL' if nullable == 'YES' else 'NOT NULL'}"
                for column, column_type, nullable in columns
            )
            log.info("table %s: key columns %s get the exact collation %s (once)", table,
                        ", ".join(c for c, _, _ in columns), collation)
            conn.exec_driver_sql(f"ALTER TABLE {quote(table)} {modify}")

    def _allow_waiting_keys(self, conn: Connection, inspector: sa.Inspector) -> None:
        """Mapping tables made before keys could wait have a NOT NULL column_name: lift it."""
        for mapping in (self.env_table, self.field_table):
            column = next(c for c in inspector.get_columns(mapping.name)
                          if c["name"] == "column_name")
            if column["nullable"]:
                continue
            quote = conn.dialect.identifier_preparer.quote
            table = quote(mapping.name)
            key = "env_key" if mapping is self.env_table else "field"
            if self.dialect == "postgresql":
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ALTER COLUMN column_name DROP NOT NULL")
            elif self.dialect in _MYSQL:
                name_type = Name.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table} MODIFY column_name {name_type} NULL")
            else:  # SQLite cannot change a column: copy the table into the current definition
                old = quote(f"{mapping.name}_old")
                conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
                mapping.create(conn)
                conn.exec_driver_sql(
                    f"INSERT INTO {table} (table_name, {key}, column_name) "  # noqa: S608
                    f"SELECT table_name, {key}, column_name FROM {old}")
                conn.exec_driver_sql(f"DROP TABLE {old}")
            log.info("%s: keys may now wait without a column", mapping.name)

    def _add_column_or_wait(self, conn: Connection, mapping: sa.Table, key: str,
                            column: str) -> bool:
        """Add an env key's or field's column; if the database refuses for good (too many
        columns, row too large), the key waits without a column instead (its values are in
        envs or fields), so a failed schema change never leaves a mapping row that points at a
        missing column, nor blocks the next export."""
        savepoint = conn.begin_nested() if self.family.transactional_ddl else None
        try:
            self._add_column(conn, column)
        except SQLAlchemyError as exc:
            if savepoint is not None:
                savepoint.rollback()
            kind = error_kind(self.family, exc)
            self._set_waiting(conn, mapping, key)
            if kind == "transient":
                raise
            log.warning("no column for %r in table %s: %s", key, self.table_name,
                        first_line(exc))
            return False
        if savepoint is not None:
            savepoint.commit()
        return True

    def _add_missing_columns(self, conn: Connection, table: sa.Table,
                             inspector: sa.Inspector) -> None:
        """Columns of a bookkeeping table added since an existing copy of it was made."""
        existing = {c["name"].lower() for c in inspector.get_columns(table.name)}
        quote = conn.dialect.identifier_preparer.quote
        for column in table.columns:
            if column.name not in existing:
                column_type = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} "
                                     f"ADD COLUMN {quote(column.name)} {column_type}")

    def _add_column(self, conn: Connection, column: str) -> None:
        quote = conn.dialect.identifier_preparer.quote
        column_type = CORE_TYPES.get(column, Text).compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {quote(self.table_name)} ADD COLUMN {quote(column)} {column_type}"
        )

    def _set_waiting(self, conn: Connection, mapping: sa.Table, key: str) -> None:
        key_column = mapping.c.env_key if mapping is self.env_table else mapping.c.field
        conn.execute(
            sa.update(mapping).where(mapping.c.table_name == self.table_name,
                                     key_column == key).values(column_name=None))
        if not self.family.transactional_ddl:
            conn.commit()

    def _fill_from_envs(self, conn: Connection, columns: dict[str, str]) -> None:
        """Copy each key's value from the stored runs' envs into its new column, a page of
        runs at a time, with the same text the export would have written."""
        quote = conn.dialect.identifier_preparer.quote
        runs = quote(self.table_name)
        sets = ", ".join(f"{quote(c)} = :c{i}" for i, c in enumerate(columns.values()))
        update = sa.text(f"UPDATE {runs} SET {sets} "  # noqa: S608 - quoted names
                         "WHERE project_id = :project_id AND run_name = :run_name")
        page = sa.text(
            f"SELECT project_id, run_name, envs FROM {runs} "  # noqa: S608 - quoted name
            "WHERE envs IS NOT NULL AND (project_id > :p OR (project_id = :p AND run_name > :r)) "
            f"ORDER BY project_id, run_name LIMIT {FILL_PAGE_ROWS}")
        after, filled = ("", ""), 0
        while True:
            rows = conn.execute(page, {"p": after[0], "r": after[1]}).all()
            if not rows:
                break
            after = (rows[-1][0], rows[-1][1])
            updates = []
            for project_id, run_name, envs in rows:
                values = _env_values(envs, columns.keys(), self.family)
                if values is not None:
                    updates.append({"project_id": project_id, "run_name": run_name,
                                    **{f"c{i}": v for i, v in enumerate(values)}})
            if updates:
                conn.execute(update, updates)
                filled += len(updates)
        log.info("filled %d runs' new columns %s from envs", filled, ", ".join(columns.values()))

    def screen(self, runs: list[FlatRun]) -> tuple[list[FlatRun], list[tuple[FlatRun, str]]]:
        """The runs this database can store as they are (text cleaned where the family must),
        and the others with the reason, checked before writing so that one bad run never
        takes its chunk down and its reason reads well."""
        family = self.family
        if family.stores_any_text:
            return runs, []
        bad_names = {
            name: problem
            for what, names in (("env key", env_keys(runs)), ("field name", extra_fields(runs)))
            for name in names
            if (problem := family.name_problem(name, what)) is not None
        }
        storable, refused = [], []
        packet = self._statement_limit()
        for run in runs:
            problem = family.key_problem(*run.pair)
            if problem is None and bad_names:
                problem = next((bad_names[n] for n in (*run.env, *run.extra) if n in bad_names),
                               None)
            if problem is None and packet is not None:
                problem = _too_large(run, packet)
            if problem is not None:
                refused.append((run, problem))
                continue
            if run.has_nul and family.cleans_text:
                _clean_run(run, family)
            storable.append(run)
        return storable, refused

    def _statement_limit(self) -> int | None:
        """The most bytes of text one run may hold here (MySQL sends a statement in one packet
        of at most max_allowed_packet, and drops the connection past it), or None."""
        if self._packet_limit is None and self.family.packet_size_query is not None:
            try:
                with self.engine.connect() as conn:
                    packet = int(conn.exec_driver_sql(self.family.packet_size_query).scalar())
            except SQLAlchemyError as exc:
                raise DatabaseError(f"reading the server's packet size failed: "
                                    f"{first_line(exc)}") from exc
            # Room for the statement around the run, and for its escaping.
            self._packet_limit = int(packet * PACKET_SHARE_FOR_ONE_RUN)
        return self._packet_limit

    # -- data ----------------------------------------------------------------------------

    def pairs_with_status(self, statuses: Iterable[str]) -> set[Pair]:
        """Stored runs whose status is one of ``statuses`` (empty before the first export)."""
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(self.table_name):
                    return set()
                table = self._runs_table(KEY_COLUMNS + ("status",))
                query = sa.select(table.c.project_id, table.c.run_name).where(
                    table.c.status.in_(sorted(statuses)))
                return {Pair(*row) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading stored runs failed: {first_line(exc)}") from exc

    def unfinished_pairs(self, projects: Iterable[str] | None = None) -> set[Pair]:
        """Stored runs without a terminal status that are not marked gone (of ``projects``
        only, when given): the runs an export should still hear about."""
        try:
            with self.engine.connect() as conn:
                inspector = sa.inspect(conn)
                if not inspector.has_table(self.table_name):
                    return set()
                names = {c["name"].lower() for c in inspector.get_columns(self.table_name)}
                has_gone = GONE_COLUMN in names  # a table from before gone_at has none
                table = self._runs_table(KEY_COLUMNS + ("status",) +
                                         ((GONE_COLUMN,) if has_gone else ()))
                query = sa.select(table.c.project_id, table.c.run_name).where(
                    sa.or_(table.c.status.is_(None),
                           table.c.status.not_in(sorted(TERMINAL_STATUSES))))
                if has_gone:
                    query = query.where(table.c[GONE_COLUMN].is_(None))
                if projects is not None:
                    query = query.where(table.c.project_id.in_(sorted(set(projects))))
                return {Pair(*row) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading stored runs failed: {first_line(exc)}") from exc

    def mark_gone(self, pairs: Iterable[Pair], at: datetime) -> int:
        """Set ``gone_at`` of the stored runs among ``pairs`` (the API answered 404 for them)
        that are not marked yet; returns how many were marked. Pairs never stored are left
        alone: there is nothing to mark."""
        params = [{"p": p.project_id, "r": p.run_name, "at": at} for p in pairs]
        if not params:
            return 0
        self.prepare(set(), set())  # a table made before gone_at gets the column
        quote = self.engine.dialect.identifier_preparer.quote
        gone = quote(GONE_COLUMN)
        update = sa.text(
            f"UPDATE {quote(self.table_name)} SET {gone} = :at "  # noqa: S608 - quoted names
            f"WHERE project_id = :p AND run_name = :r AND {gone} IS NULL")
        try:
            with self._table_lock() as conn:
                marked = sum(conn.execute(update, row).rowcount for row in params)
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"marking runs gone in table {self.table_name} failed: {first_line(exc)}"
            ) from exc
        if marked:
            log.info("%d stored runs of %s are gone upstream (HTTP 404)", marked,
                     self.table_name)
        return marked

    # A chunk is staged in a temporary table, then merged by set-based SQL: the history is
    # compared and extended in the database, and the upsert is one INSERT ... SELECT. Python
    # touches each run once, to hand the rows to the driver (COPY on PostgreSQL).

    def _create_stage(self, conn: Connection) -> None:
        runs = conn.dialect.identifier_preparer.quote(self.table_name)
        if self.dialect == "postgresql":  # dropped at commit; a rollback drops it too
            conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {STAGE} (LIKE {runs}) ON COMMIT DROP")
        elif self.dialect in _MYSQL:  # a failed transaction leaves MySQL's temporary table
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {STAGE}")
            conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {STAGE} LIKE {runs}")
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{STAGE}")
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {STAGE} AS "  # noqa: S608 - quoted name
                f"SELECT * FROM main.{runs} WHERE 0")

    def _drop_stage(self, conn: Connection) -> None:
        if self.dialect in _MYSQL:
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE {STAGE}")
        elif self.dialect == "sqlite":
            conn.exec_driver_sql(f"DROP TABLE temp.{STAGE}")

    def _fill_stage(self, conn: Connection, columns: list[str], rows: list[list]) -> None:
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        if self.dialect == "postgresql":
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy(f"COPY {STAGE} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return
        if self.dialect == "sqlite":
            _sqlite_timestamps(rows, [columns.index(c) for c in TIMESTAMP_COLUMNS])
        marker = "?" if self.dialect == "sqlite" else "%s"
        # The driver's own executemany (PyMySQL turns it into multi-row INSERTs); SQLAlchemy's
        # per-row parameter processing was most of the load time.
        markers = ", ".join([marker] * len(columns))
        conn.exec_driver_sql(
            f"INSERT INTO {STAGE} ({names}) VALUES ({markers})",  # noqa: S608 - quoted names
            list(map(tuple, rows)),  # SQLAlchemy takes tuples, not lists
        )

    def _merge_stage(self, conn: Connection, columns: list[str]) -> None:
        """INSERT ... SELECT from the stage, updating every non-key column of existing runs;
        list times are known only when a run was discovered, so they are never erased."""
        quote = conn.dialect.identifier_preparer.quote
        runs = quote(self.table_name)
        names = ", ".join(quote(c) for c in columns)
        incoming = "VALUES({})" if self.dialect in _MYSQL else "excluded.{}"
        sets = ", ".join(
            f"{quote(c)} = COALESCE({incoming.format(quote(c))}, {runs}.{quote(c)})"
            if c in LIST_TIME_COLUMNS else f"{quote(c)} = {incoming.format(quote(c))}"
            for c in columns if c not in KEY_COLUMNS
        )
        if self.dialect in _MYSQL:
            conflict = f"ON DUPLICATE KEY UPDATE {sets}"
        else:
            keys = ", ".join(quote(c) for c in KEY_COLUMNS)
            conflict = f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        # WHERE 1 = 1: SQLite's parser needs it to tell ON CONFLICT from a join's ON.
        conn.exec_driver_sql(
            f"INSERT INTO {runs} ({names}) SELECT {names} FROM {STAGE} "  # noqa: S608 - quoted
            f"WHERE 1 = 1 {conflict}"
        )

    def _write_history(self, conn: Connection, columns: list[str],
                       batch_id: int | None) -> None:
        """Before the merge: close the current version of every staged run whose content
        differs from its stored row (keeping that row as JSON), then open a version for every
        staged run that has none. Unchanged runs add nothing."""
        quote = conn.dialect.identifier_preparer.quote
        runs, history = quote(self.table_name), quote(HISTORY_TABLE)
        content = [quote(c) for c in columns
                   if c not in KEY_COLUMNS and c not in OBSERVATION_COLUMNS]
        # BINARY on MySQL: the text columns' collation ignores case and trailing spaces.
        exact = "BINARY " if self.dialect in _MYSQL else ""
        staged = ", ".join(f"{exact}s.{c}" for c in content)
        stored = ", ".join(f"{exact}r.{c}" for c in content)
        # Every name below is quoted by the dialect; the table name is a bound parameter.
        current = ("h.table_name = :table AND h.project_id = s.project_id "
                   "AND h.run_name = s.run_name AND h.valid_to IS NULL")
        same_run = "r.project_id = s.project_id AND r.run_name = s.run_name"
        if self.dialect == "postgresql":
            # LATERAL ... LIMIT 1 walks the indexes once per staged run. A plain join was
            # planned from statistics taken while the tables were still empty (a hash join
            # over the whole history: 50x slower in the middle of a large load).
            changed_sql = (
                f"SELECT h.id, s.project_id, s.run_name, s.fetched_at FROM {STAGE} s "  # noqa: S608
                f"CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE {same_run} LIMIT 1) r "
                f"CROSS JOIN LATERAL (SELECT h.id FROM {history} h WHERE {current} LIMIT 1) h "
                f"WHERE ROW({staged}) IS DISTINCT FROM ROW({stored})"
            )
            unversioned = (
                f"{STAGE} s LEFT JOIN LATERAL (SELECT h.id FROM {history} h "  # noqa: S608
                f"WHERE {current} LIMIT 1) h ON true WHERE h.id IS NULL"
            )
        else:
            if self.dialect in _MYSQL:
                differs, join = f"NOT (({staged}) <=> ({stored}))", "JOIN"
            else:  # CROSS JOIN keeps the stage outermost: SQLite has no statistics for it
                differs, join = f"({staged}) IS NOT ({stored})", "CROSS JOIN"
            changed_sql = (
                f"SELECT h.id, s.project_id, s.run_name, s.fetched_at FROM {STAGE} s "  # noqa: S608
                f"{join} {runs} r ON {same_run} {join} {history} h ON {current} "
                f"WHERE {differs}"
            )
            unversioned = (
                f"{STAGE} s WHERE NOT EXISTS "  # noqa: S608 - quoted names
                f"(SELECT 1 FROM {history} h WHERE {current})"
            )
        changed = conn.execute(sa.text(changed_sql), {"table": self.table_name}).all()
        if changed:
            superseded = self._stored_rows(conn, {Pair(p, r) for _, p, r, _ in changed})
            table = self.history_table
            conn.execute(
                sa.update(table).where(table.c.id == sa.bindparam("row_id"))
                .values(valid_to=sa.bindparam("closed_at"), content=sa.bindparam("old")),
                [{"row_id": row_id, "closed_at": _as_datetime(closed_at),
                  "old": superseded.get(Pair(project_id, run_name))}
                 for row_id, project_id, run_name, closed_at in changed],
            )
        # Runs with no current version: new ones and those just closed.
        legacy = (", content_hash", ", ''") if self._legacy_content_hash else ("", "")
        conn.execute(sa.text(
            f"INSERT INTO {history} (table_name, project_id, run_name, valid_from, "  # noqa: S608
            f"batch_id, status{legacy[0]}) SELECT :table, s.project_id, s.run_name, "
            f"s.fetched_at, :batch_id, s.status{legacy[1]} FROM {unversioned}"
        ), {"table": self.table_name, "batch_id": batch_id})

    def _stored_rows(self, conn: Connection, pairs: set[Pair]) -> dict[Pair, str]:
        """The runs-table rows of ``pairs`` as JSON, before this chunk overwrites them."""
        quote = conn.dialect.identifier_preparer.quote
        rows: dict[Pair, str] = {}
        names = sorted({p.run_name for p in pairs})
        projects = sorted({p.project_id for p in pairs})
        for start in range(0, len(names), HISTORY_LOOKUP_KEYS):
            query = sa.text(
                f"SELECT * FROM {quote(self.table_name)} "  # noqa: S608 - quoted name
                "WHERE project_id IN :projects AND run_name IN :names"
            ).bindparams(sa.bindparam("projects", expanding=True),
                         sa.bindparam("names", expanding=True))
            result = conn.execute(query, {"projects": projects,
                                          "names": names[start:start + HISTORY_LOOKUP_KEYS]})
            for row in result.mappings():
                pair = Pair(row["project_id"], row["run_name"])
                if pair in pairs:
                    kept = {k: v for k, v in row.items()
                            if v is not None and k not in OBSERVATION_COLUMNS}
                    rows[pair] = json.dumps(kept, ensure_ascii=False, default=str)
        return rows

    def upsert(self, frame: pd.DataFrame, batch_id: int | None = None,
               mapping: ColumnMap | None = None) -> int:
        """Write one chunk and its change history in one transaction; returns the runs
        written. ``frame`` has one row per run, built from ``mapping``: if another export has
        changed the mapping since (given a waiting key a column, filled from the runs stored
        then), :class:`MappingChanged` says to build the frame again."""
        if frame.empty:
            return 0
        columns = list(frame.columns)
        # One object block -> lists in C; itertuples() boxes every cell through Series.
        rows = frame.to_numpy(dtype=object).tolist()
        try:
            with self._table_lock() as conn:  # one writer per table, across exports too
                if mapping is not None and self.read_mapping(conn) != mapping:
                    raise MappingChanged(self.table_name)
                self._create_stage(conn)
                self._fill_stage(conn, columns, rows)
                self._write_history(conn, columns, batch_id)  # first: it reads the old rows
                self._merge_stage(conn, columns)
                self._drop_stage(conn)
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"writing {len(rows)} runs to table {self.table_name} failed: "
                f"{first_line(exc)}"
            ) from exc
        return len(rows)


def _env_values(envs: str, keys: Iterable[str], family: Family) -> list | None:
    """The column text of each key in one stored envs object (None where absent), as
    flatten_run writes it; None when the object holds none of them or is not JSON."""
    try:
        obj = jsontext.loads(envs.encode("utf-8", "surrogatepass"))
    except ValueError:
        return None  # written by an old version (e.g. Infinity): nothing to copy
    if not isinstance(obj, dict):
        return None
    values = [obj.get(key) for key in keys]
    if all(v is None for v in values):
        return None
    return [family.clean_text(as_text(v, key)) for v, key in zip(values, keys, strict=True)]


def _too_large(run: FlatRun, limit: int) -> str | None:
    """Why one run's text cannot go to the server in one statement, or None. Measured as the
    driver sends it: UTF-8, with a backslash before each character it escapes."""
    texts = [v for v in (*run.columns.values(), *run.env.values(), *run.extra.values())
             if type(v) is str]
    if sum(map(len, texts)) * 8 <= limit:  # 4 bytes a character at most, escaped: surely fits
        return None
    size = sum(len(text.encode("utf-8", "surrogatepass"))
               + sum(map(text.count, _ESCAPED_BY_DRIVER)) for text in texts)
    if size <= limit:
        return None
    return (f"the run holds {size / 1e6:.1f} MB of text; the server takes at most "
            f"{limit / 1e6:.1f} MB in one statement (max_allowed_packet)")


def _clean_run(run: FlatRun, family: Family) -> None:
    """Replace, in place, what the family's text columns cannot hold (envs keeps it exact)."""
    clean = family.clean_text
    for column, value in run.columns.items():
        if column != "envs":
            run.columns[column] = clean(value)
    run.env = {key: clean(value) for key, value in run.env.items()}
    run.extra = {key: clean(value) for key, value in run.extra.items()}


def _as_datetime(value: object) -> object:
    # Read back from SQLite's stage as text; other drivers return datetimes.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _sqlite_timestamps(rows: list[list], timestamp_indexes: list[int]) -> None:
    """Datetimes in ``rows`` (changed in place) as the text SQLAlchemy's SQLite DateTime reads
    back (sqlite3's own datetime adapter is deprecated)."""
    texts: dict = {None: None}  # runs of one chunk mostly share a few timestamps
    for index in timestamp_indexes:
        for row in rows:
            value = row[index]
            text = texts.get(value)
            if text is None and value is not None:
                text = texts[value] = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            row[index] = text
