"""The tables of one runs table in one database, and keeping them in step with the runs.

Contract, the same on SQLite, PostgreSQL and MySQL/MariaDB:

* the runs table has primary key ``(project_id, run_name)``, the fixed columns of
  :data:`etl.transform.CORE_COLUMNS`, one ``env_*`` column per env key ever seen and one column
  per undocumented top-level field;
* ``nsml_env_columns`` and ``nsml_field_columns`` remember which column each key got; a key's
  column never changes and no column is ever dropped or renamed;
* schema changes and chunk writes run under one lock per table (SQLite's write lock, a
  PostgreSQL advisory lock, MySQL ``GET_LOCK``); schema changes re-read the schema after taking
  it, so two exports adding the same key at once agree, and two exports writing the same runs
  take turns, so their change history stays one version after another; a chunk's rows are
  built again under the lock from the mapping found there when others changed it meanwhile
  (:meth:`etl.store.RunStore.upsert`), so exports side by side never starve each other;
* a mapping row is committed before its column is added, so MySQL's implicit commit on DDL can
  never leave a column nobody owns: a mapped column that is missing is simply added next time.

Also here: the bookkeeping tables (batches, failures, history), and the check that an existing
table is one of ours. Writing runs into these tables is :mod:`etl.store`'s job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles

from .. import jsontext
from ..columnnames import allocate_columns, allocation_order, snake_case
from ..config import DEFAULT_MAX_ENV_COLUMNS
from ..errors import DatabaseError, MappingChanged
from ..events import event
from ..tablenames import (
    BATCHES_TABLE,
    ENV_COLUMNS_TABLE,
    FAILURES_TABLE,
    FIELD_COLUMNS_TABLE,
    HISTORY_TABLE,
    NODE_HISTORY_TABLE,
    NODES_TABLE,
)
from ..transform import (
    CORE_COLUMNS,
    GONE_COLUMN,
    KEY_COLUMNS,
    LIST_TIME_COLUMNS,
    as_text,
)
from .dialects import (
    MYSQL_MAPPING_KEY_CHARS,
    MYSQL_RUN_KEY_CHARS,
    Family,
    error_kind,
    family_of,
    first_line,
)

log = logging.getLogger("nsml_etl.schema")  # its name before the sub-packages

# How long one schema change (ALTER TABLE) waits for its table lock. A transaction left open on
# the table (a dashboard, a SQL console) holds it off, and every new query on the table queues
# behind the waiting ALTER: those stall this long at most, then run while we wait to retry.
SCHEMA_LOCK_TIMEOUT_S = 3.0
# Schema changes tried this often before the export stops with exit 4; the waits in between
# start here and double (1, 2, 4 s: about 20 s in all with the lock waits).
SCHEMA_LOCK_ATTEMPTS = 4
SCHEMA_LOCK_RETRY_WAIT_S = 1.0
# Undocumented top-level fields that get a column of their own, per table; the others are in
# the fields column only. With the default env cap this still fits a MariaDB row (see
# config.DEFAULT_MAX_ENV_COLUMNS: 138 text columns besides the fixed ones).
MAX_FIELD_COLUMNS = 30
# Stored runs read per query when a new column is filled from their envs.
FILL_PAGE_ROWS = 2000

# The MySQL and MariaDB dialects, for column types of their own.
_MYSQL = ("mysql", "mariadb")
# Table options for every table we create: MySQL's utf8 is not full UTF-8.
UTF8MB4: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}
TIMESTAMP_COLUMNS = ("fetched_at", *LIST_TIME_COLUMNS, GONE_COLUMN)


class KeyVarchar(mysql.VARCHAR):
    """A MySQL string compared as a key: created with the family's exact collation
    (:meth:`etl.dialects.MySQLFamily.key_collation`)."""


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


def _id_column() -> sa.Column[Any]:
    # SQLite auto-increments only an INTEGER PRIMARY KEY; elsewhere a BIGINT identity.
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


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


def _node_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Each run's current nodes (key: the run's and the node's id, compared exactly), and their
    type-2 history as :func:`_history_table` keeps the runs': one row per version of a node,
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
        _id_column(),
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


def _lock_key(table: str, database: str | None = None) -> int:
    """The number naming a runs table's lock: from its name, and its database's where the
    family's lock names span the server (:attr:`Family.server_wide_locks`)."""
    name = table if database is None else f"{database}.{table}"
    digest = hashlib.sha256(f"nsml-etl table {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Schema:
    """The runs table of one database and nsml-etl's tables beside it: creates them, and gives
    every new env key and field a column (or has it wait), under the table's lock."""

    def __init__(
        self, engine: Engine, table: str, max_env_columns: int = DEFAULT_MAX_ENV_COLUMNS
    ) -> None:
        self.engine = engine
        self.table_name = table
        self.family: Family = family_of(engine.dialect.name)
        self.max_env_columns = max_env_columns
        self._metadata = sa.MetaData()
        self.env_table = _mapping_table(ENV_COLUMNS_TABLE, "env_key", self._metadata)
        self.field_table = _mapping_table(FIELD_COLUMNS_TABLE, "field", self._metadata)
        self.batches_table, self.failures_table = _batch_tables(self._metadata)
        self.history_table = _history_table(self._metadata)
        self.nodes_table, self.node_history_table = _node_tables(self._metadata)
        # Columns seen in the table (or added by us). A mapping row can be visible before its
        # column exists (MySQL commits the mapping before its DDL), so a mapped column not in
        # here sends us through the locked path, which waits for the other export's ALTER.
        self._known_columns: set[str] = set()
        # History tables made by nsml-etl 0.1 before this change have a NOT NULL content_hash
        # that nothing reads any more; it gets an empty string so those databases keep working.
        self.legacy_content_hash = False
        self._sql_tables: dict[tuple[str, ...], sa.Table] = {}

    def runs_table(self, columns: Iterable[str]) -> sa.Table:
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
    def table_lock(self) -> Iterator[Connection]:
        """A connection in a transaction that holds this table's write lock (the family's:
        :meth:`etl.dialects.Family.table_lock`), committed on success.

        One lock for schema changes and chunk writes alike: an ALTER TABLE waiting for a
        chunk's transaction blocks that transaction's next, stronger table lock (MariaDB's
        metadata locks, PostgreSQL's table locks), and the database kills the chunk as a
        deadlock; two chunks of the same runs at once would both close and open versions."""
        # Exports into one table's namesake in another database must not wait for each other.
        database = self.engine.url.database if self.family.server_wide_locks else None
        key = _lock_key(self.table_name, database)
        with self.engine.connect() as conn, self.family.table_lock(conn, key, self.table_name):
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

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
                # Entered after the table lock, which must keep waiting for other exports.
                with (
                    self.table_lock() as conn,
                    self.family.bounded_lock_waits(conn, SCHEMA_LOCK_TIMEOUT_S),
                ):
                    current = self._evolve(conn, env_keys, fields)
                break
            except SQLAlchemyError as exc:
                if not self.family.is_lock_timeout(exc):
                    raise DatabaseError(
                        f"schema change on table {self.table_name} failed: {first_line(exc)}"
                    ) from exc
                table = self._locked_table(exc)
                if attempt == SCHEMA_LOCK_ATTEMPTS:
                    raise DatabaseError(self._locked_message(table)) from None
                wait = SCHEMA_LOCK_RETRY_WAIT_S * 2 ** (attempt - 1)
                log.warning(
                    "table %s is locked by another session; adding columns again in "
                    "%gs (attempt %d of %d)",
                    table,
                    wait,
                    attempt + 1,
                    SCHEMA_LOCK_ATTEMPTS,
                )
                time.sleep(wait)
        self._known_columns = set(current.columns)
        return current

    def usable_mapping(self, conn: Connection, current: ColumnMap) -> ColumnMap:
        """``current``, read under the table's lock, once every column it names is known to
        exist (one look at the table when another export added columns); else
        :class:`MappingChanged`. A mapping only grows, so it covers every key of the chunk.
        A mapped column can be missing only where an export stopped between committing the
        mapping and its ALTER TABLE (MySQL commits the mapping first)."""
        unknown = set(current.columns) - self._known_columns
        if unknown:
            existing = {c["name"].lower() for c in sa.inspect(conn).get_columns(self.table_name)}
            if not {c.lower() for c in unknown} <= existing:
                raise MappingChanged(self.table_name, current)
            self._known_columns |= unknown
        return current

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
        self.runs_table(CORE_COLUMNS).create(conn, checkfirst=True)
        self.family.migrate_key_collations(conn, self._key_columns(conn.dialect))
        inspector = sa.inspect(conn)
        self._allow_waiting_keys(conn, inspector)
        current = self.read_mapping(conn)
        existing = {c["name"].lower() for c in inspector.get_columns(self.table_name)}
        self.legacy_content_hash = "content_hash" in {
            c["name"].lower() for c in inspector.get_columns(HISTORY_TABLE)
        }
        self._refuse_gone_column_clash(current)
        self._add_missing_columns(conn, self.batches_table, inspector)
        taken = existing | set(CORE_COLUMNS) | set(current.env.values())
        taken |= set(current.fields.values())

        # Env keys get columns up to the cap: keys that waited first, then new keys in the
        # order allocate_columns uses; the rest are recorded without a column.
        # Never past the database's own column limit, whatever the cap says.
        room = max(
            0, min(self.max_env_columns - len(current.env), self.family.max_columns - len(existing))
        )
        promoted = sorted(current.waiting)[:room]
        new_keys = allocation_order(env_keys - current.env.keys() - current.waiting)
        with_column = new_keys[: room - len(promoted)]
        without_column = new_keys[len(with_column) :]
        allocated = allocate_columns([*promoted, *with_column], taken)
        taken |= set(allocated.values())
        # Undocumented fields likewise, up to their own fixed cap (every value is also in the
        # fields column); a field that waits keeps waiting.
        field_room = max(
            0,
            min(
                MAX_FIELD_COLUMNS - len(current.fields),
                self.family.max_columns - len(existing) - len(allocated),
            ),
        )
        unmapped = fields - current.fields.keys() - current.waiting_fields
        field_names = {f: snake_case(f) for f in unmapped}
        new_field_keys = allocation_order(unmapped, prefix="", preferred=field_names)
        new_fields = allocate_columns(
            new_field_keys[:field_room], taken, prefix="", preferred=field_names
        )
        env_rows = [
            {"env_key": k, "column_name": allocated.get(k)} for k in (*with_column, *without_column)
        ]
        field_rows = [{"field": k, "column_name": new_fields.get(k)} for k in new_field_keys]
        for table, rows in ((self.env_table, env_rows), (self.field_table, field_rows)):
            if rows:
                conn.execute(
                    sa.insert(table), [{"table_name": self.table_name, **row} for row in rows]
                )
        if promoted:
            table = self.env_table
            conn.execute(
                sa.update(table)
                .where(
                    table.c.table_name == self.table_name, table.c.env_key == sa.bindparam("key")
                )
                .values(column_name=sa.bindparam("column")),
                [{"key": k, "column": allocated[k]} for k in promoted],
            )
        if allocated or new_fields:
            log.info(
                "new columns in %s: %s",
                self.table_name,
                ", ".join([*allocated.values(), *new_fields.values()]),
            )
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
                newly_waiting,
                self.table_name,
                len(current.waiting),
                self.max_env_columns,
                extra=event(
                    "env_keys_without_column",
                    table=self.table_name,
                    new=newly_waiting,
                    total=len(current.waiting),
                    max_env_columns=self.max_env_columns,
                ),
            )
        waiting_fields = len(new_field_keys) - len(new_fields)
        if waiting_fields:
            log.warning(
                "%d undocumented fields of table %s have no column (%d at most); their values "
                "are in its fields column",
                waiting_fields,
                self.table_name,
                MAX_FIELD_COLUMNS,
                extra=event(
                    "fields_without_column",
                    table=self.table_name,
                    new=waiting_fields,
                    total=len(current.waiting_fields),
                    max_field_columns=MAX_FIELD_COLUMNS,
                ),
            )
        return current

    def _refuse_gone_column_clash(self, current: ColumnMap) -> None:
        """A table made before ``gone_at`` may have given that name to an undocumented field
        (``goneAt``): refused rather than written twice. (Missing fixed columns are added in
        :meth:`_evolve`.)"""
        if GONE_COLUMN in current.fields.values():
            raise DatabaseError(
                f"column {GONE_COLUMN} of table {self.table_name} holds an undocumented field, "
                f"and nsml-etl now needs that name for its own {GONE_COLUMN}; export into a new "
                "--table"
            )

    def _key_columns(self, dialect: sa.Dialect) -> dict[str, set[str]]:
        """Our tables' columns compared as keys on MySQL (those of a :data:`KEY_TYPES`), by
        table; none elsewhere."""
        runs = sa.Table(
            self.table_name,
            sa.MetaData(),
            *(sa.Column(c, CORE_TYPES[c], primary_key=True) for c in KEY_COLUMNS),
        )
        return {
            table.name: keys
            for table in (runs, *self._metadata.sorted_tables)
            if (
                keys := {
                    c.name
                    for c in table.columns
                    if isinstance(c.type.dialect_impl(dialect), KEY_TYPES)
                }
            )
        }

    def _allow_waiting_keys(self, conn: Connection, inspector: sa.Inspector) -> None:
        """Mapping tables made before keys could wait have a NOT NULL column_name: lift it."""
        for mapping in (self.env_table, self.field_table):
            column = next(
                c for c in inspector.get_columns(mapping.name) if c["name"] == "column_name"
            )
            if column["nullable"]:
                continue
            self.family.make_nullable(conn, mapping, "column_name")
            log.info("%s: keys may now wait without a column", mapping.name)

    def _add_column_or_wait(
        self, conn: Connection, mapping: sa.Table, key: str, column: str
    ) -> bool:
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
            log.warning("no column for %r in table %s: %s", key, self.table_name, first_line(exc))
            return False
        if savepoint is not None:
            savepoint.commit()
        return True

    def _add_missing_columns(
        self, conn: Connection, table: sa.Table, inspector: sa.Inspector
    ) -> None:
        """Columns of a bookkeeping table added since an existing copy of it was made."""
        existing = {c["name"].lower() for c in inspector.get_columns(table.name)}
        quote = conn.dialect.identifier_preparer.quote
        for column in table.columns:
            if column.name not in existing:
                column_type = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column_type}"
                )

    def _add_column(self, conn: Connection, column: str) -> None:
        quote = conn.dialect.identifier_preparer.quote
        column_type = CORE_TYPES.get(column, Text).compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {quote(self.table_name)} ADD COLUMN {quote(column)} {column_type}"
        )

    def _set_waiting(self, conn: Connection, mapping: sa.Table, key: str) -> None:
        key_column = mapping.c.env_key if mapping is self.env_table else mapping.c.field
        conn.execute(
            sa.update(mapping)
            .where(mapping.c.table_name == self.table_name, key_column == key)
            .values(column_name=None)
        )
        if not self.family.transactional_ddl:
            conn.commit()

    def _fill_from_envs(self, conn: Connection, columns: dict[str, str]) -> None:
        """Copy each key's value from the stored runs' envs into its new column, a page of
        runs at a time, with the same text the export would have written."""
        quote = conn.dialect.identifier_preparer.quote
        runs = quote(self.table_name)
        sets = ", ".join(f"{quote(c)} = :c{i}" for i, c in enumerate(columns.values()))
        update = sa.text(
            f"UPDATE {runs} SET {sets} "  # noqa: S608 - quoted names
            "WHERE project_id = :project_id AND run_name = :run_name"
        )
        page = sa.text(
            f"SELECT project_id, run_name, envs FROM {runs} "  # noqa: S608 - quoted name
            "WHERE envs IS NOT NULL AND (project_id > :p OR (project_id = :p AND run_name > :r)) "
            f"ORDER BY project_id, run_name LIMIT {FILL_PAGE_ROWS}"
        )
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
                    updates.append(
                        {
                            "project_id": project_id,
                            "run_name": run_name,
                            **{f"c{i}": v for i, v in enumerate(values)},
                        }
                    )
            if updates:
                conn.execute(update, updates)
                filled += len(updates)
        log.info("filled %d runs' new columns %s from envs", filled, ", ".join(columns.values()))


def _env_values(envs: str, keys: Iterable[str], family: Family) -> list[Any] | None:
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
