"""One runs table's schema and its evolution: which column each env key and field lands in,
and keeping the table in step with the runs.

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
  (:meth:`etl.warehouse.store.RunStore.upsert`), so exports side by side never starve each
  other;
* a mapping row is committed before its column is added, so MySQL's implicit commit on DDL can
  never leave a column nobody owns: a mapped column that is missing is simply added next time.

A schema change (:meth:`Schema._evolve`) is a sequence of named steps; the tables it makes are
defined in :mod:`etl.warehouse.tables`, the layouts of earlier versions are brought up to date
by :mod:`etl.warehouse.migrations`, and writing runs into the tables is
:mod:`etl.warehouse.store`'s job.
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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .. import jsontext
from ..columnnames import allocate_columns, allocation_order, snake_case
from ..config import DEFAULT_MAX_ENV_COLUMNS
from ..errors import DatabaseError, MappingChanged
from ..events import event
from ..tablenames import BATCHES_TABLE, ENV_COLUMNS_TABLE, FIELD_COLUMNS_TABLE
from ..transform import CORE_COLUMNS, KEY_COLUMNS, as_text
from . import migrations
from .failures import error_kind, first_line
from .families import Family, family_of
from .tables import (
    CORE_TYPES,
    UTF8MB4,
    Text,
    batch_tables,
    history_table,
    mapping_table,
    node_tables,
    refuse_foreign_table,
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


@dataclass(frozen=True)
class Allocation:
    """The columns one schema change chooses (:meth:`Schema._allocate`), before any is
    written. Env keys: ``promoted`` (they waited and get a column now), ``with_column`` and
    ``without_column`` (new, and given a column or waiting), ``columns`` (the env columns of
    the first two, by key); fields: ``field_keys`` (every new field, in allocation order) and
    ``new_fields`` (the columns of those that get one; the others wait)."""

    promoted: list[str]
    with_column: list[str]
    without_column: list[str]
    columns: dict[str, str]
    field_keys: list[str]
    new_fields: dict[str, str]

    def mapping(self, current: ColumnMap) -> ColumnMap:
        """The mapping once these columns are recorded on top of ``current``."""
        chosen = {k: self.columns[k] for k in (*self.promoted, *self.with_column)}
        return ColumnMap(current.env | chosen, current.fields | self.new_fields)


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
        self.env_table = mapping_table(ENV_COLUMNS_TABLE, "env_key", self._metadata)
        self.field_table = mapping_table(FIELD_COLUMNS_TABLE, "field", self._metadata)
        self.batches_table, self.failures_table = batch_tables(self._metadata, self.family)
        self.history_table = history_table(self._metadata, self.family)
        self.nodes_table, self.node_history_table = node_tables(self._metadata, self.family)
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
        :meth:`etl.warehouse.families.Family.table_lock`), committed on success.

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
        """One schema change under the table's lock, step by step: make what is missing,
        bring earlier versions' layouts up to date (:mod:`etl.warehouse.migrations`), read
        the mapping, give new keys columns, record them, add the columns, fill them. Each step
        reads the tables again: another export may have just done it."""
        self._create_tables(conn)
        migrations.exact_key_collations(conn, self.family, self.table_name, self._metadata)
        inspector = sa.inspect(conn)
        migrations.allow_waiting_keys(conn, inspector, self.family, self._mapping_tables)
        current = self.read_mapping(conn)
        existing = {c["name"].lower() for c in inspector.get_columns(self.table_name)}
        self.legacy_content_hash = migrations.has_content_hash(inspector)
        migrations.refuse_gone_column_clash(self.table_name, current.fields)
        migrations.add_new_columns(conn, self.batches_table, inspector)
        plan = self._allocate(current, existing, env_keys, fields)
        self._record_mapping(conn, plan)
        planned = plan.mapping(current)
        added_env = self._add_columns(conn, planned, existing)
        current = self.read_mapping(conn)  # a column that could not be added is waiting now
        self._refill(conn, plan, added_env)
        self._warn_waiting(plan, planned, current)
        return current

    @property
    def _mapping_tables(self) -> tuple[sa.Table, sa.Table]:
        return self.env_table, self.field_table

    def _create_tables(self, conn: Connection) -> None:
        """Create whichever of our tables is missing, once the runs table is known to be ours
        (another tool may have made it since the check before the first request)."""
        refuse_foreign_table(conn, self.table_name)
        self._metadata.create_all(conn, checkfirst=True)
        self.runs_table(CORE_COLUMNS).create(conn, checkfirst=True)

    def _allocate(
        self, current: ColumnMap, existing: set[str], env_keys: set[str], fields: set[str]
    ) -> Allocation:
        """Choose the columns of the keys that get one now (nothing is written here): env keys
        up to the cap, keys that waited first, then new keys in the order allocate_columns
        uses; the rest wait without a column. Undocumented fields likewise, up to their own
        fixed cap (every value is also in the fields column); a field that waits keeps
        waiting. Never past the database's own column limit, whatever the caps say."""
        taken = existing | set(CORE_COLUMNS) | set(current.env.values())
        taken |= set(current.fields.values())
        room = max(
            0, min(self.max_env_columns - len(current.env), self.family.max_columns - len(existing))
        )
        promoted = sorted(current.waiting)[:room]
        new_keys = allocation_order(env_keys - current.env.keys() - current.waiting)
        with_column = new_keys[: room - len(promoted)]
        allocated = allocate_columns([*promoted, *with_column], taken)
        taken |= set(allocated.values())
        field_room = max(
            0,
            min(
                MAX_FIELD_COLUMNS - len(current.fields),
                self.family.max_columns - len(existing) - len(allocated),
            ),
        )
        unmapped = fields - current.fields.keys() - current.waiting_fields
        field_names = {f: snake_case(f) for f in unmapped}
        field_keys = allocation_order(unmapped, prefix="", preferred=field_names)
        new_fields = allocate_columns(
            field_keys[:field_room], taken, prefix="", preferred=field_names
        )
        return Allocation(
            promoted, with_column, new_keys[len(with_column) :], allocated, field_keys, new_fields
        )

    def _record_mapping(self, conn: Connection, plan: Allocation) -> None:
        """Write the new keys' mapping rows (a NULL column: the key waits) and give the
        promoted keys their columns; committed before any DDL where DDL commits implicitly
        (MySQL), so no column is ever added that no mapping row owns."""
        env_rows = [
            {"env_key": k, "column_name": plan.columns.get(k)}
            for k in (*plan.with_column, *plan.without_column)
        ]
        field_rows = [{"field": k, "column_name": plan.new_fields.get(k)} for k in plan.field_keys]
        for table, rows in ((self.env_table, env_rows), (self.field_table, field_rows)):
            if rows:
                conn.execute(
                    sa.insert(table), [{"table_name": self.table_name, **row} for row in rows]
                )
        if plan.promoted:
            table = self.env_table
            conn.execute(
                sa.update(table)
                .where(
                    table.c.table_name == self.table_name, table.c.env_key == sa.bindparam("key")
                )
                .values(column_name=sa.bindparam("column")),
                [{"key": k, "column": plan.columns[k]} for k in plan.promoted],
            )
        if plan.columns or plan.new_fields:
            log.info(
                "new columns in %s: %s",
                self.table_name,
                ", ".join([*plan.columns.values(), *plan.new_fields.values()]),
            )
        if not self.family.transactional_ddl and (env_rows or field_rows or plan.promoted):
            conn.commit()  # the mapping must be durable before MySQL's DDL commits implicitly

    def _add_columns(
        self, conn: Connection, planned: ColumnMap, existing: set[str]
    ) -> dict[str, str]:
        """Add every column the runs table lacks: fixed columns added to nsml-etl since the
        table was made, then the mapped env and field columns (``planned``; a mapped column
        may be missing where an export stopped between its mapping and its ALTER TABLE).
        Returns the env columns added, by key."""
        for column in migrations.missing_fixed_columns(existing):
            self._add_column(conn, column)
        added_env: dict[str, str] = {}
        for key, column in list(planned.env.items()):
            if column.lower() not in existing:
                if self._add_column_or_wait(conn, self.env_table, key, column):
                    added_env[key] = column
        for key, column in list(planned.fields.items()):
            if column.lower() not in existing:
                self._add_column_or_wait(conn, self.field_table, key, column)
        return added_env

    def _refill(self, conn: Connection, plan: Allocation, added_env: dict[str, str]) -> None:
        """A key that waited (or whose column went missing) may already have values in stored
        runs: fill its new column from their envs. A brand-new key has none yet."""
        brand_new = set(plan.with_column)
        refill = {k: c for k, c in added_env.items() if k not in brand_new}
        if refill:
            self._fill_from_envs(conn, refill)

    def _warn_waiting(self, plan: Allocation, planned: ColumnMap, current: ColumnMap) -> None:
        """Say which keys wait without a column since this change: new keys past the cap and
        keys whose column could not be added (env keys), new fields past theirs."""
        newly_waiting = len(plan.without_column) + len(set(planned.env) - current.env.keys())
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
        waiting_fields = len(plan.field_keys) - len(plan.new_fields)
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

    def _add_column_or_wait(
        self, conn: Connection, mapping: sa.Table, key: str, column: str
    ) -> bool:
        """Add an env key's or field's column; if the database refuses for good (too many
        columns, row too large), the key waits without a column instead (its values are in
        envs or fields), so a failed schema change never leaves a mapping row that points at a
        missing column, nor blocks the next export."""
        family = self.family
        savepoint = conn.begin_nested() if family.transactional_ddl and family.savepoints else None
        try:
            self._add_column(conn, column)
        except SQLAlchemyError as exc:
            if savepoint is not None:
                savepoint.rollback()
            elif family.transactional_ddl:
                raise  # the failure aborted the transaction, and no savepoint can undo it
            kind = error_kind(self.family, exc)
            self._set_waiting(conn, mapping, key)
            if kind == "transient":
                raise
            log.warning("no column for %r in table %s: %s", key, self.table_name, first_line(exc))
            return False
        if savepoint is not None:
            savepoint.commit()
        return True

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
