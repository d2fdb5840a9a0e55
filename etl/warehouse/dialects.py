"""What differs between the database families we write to: one object per family.

:func:`family_of` picks the object from a SQLAlchemy dialect name. The write path
(:mod:`etl.store`), the schema (:mod:`etl.schema`) and the views (:mod:`etl.views`) ask it instead
of branching on the dialect's name:

* what can be stored: :meth:`Family.key_problem`, :meth:`Family.name_problem` (a key, env key
  or field name too long for the family's indexes, a NUL where PostgreSQL text cannot hold
  one), :meth:`Family.clean_text`, ``max_columns``, ``packet_size_query``; checked before
  writing, so that the reason reads well;
* what its errors mean: :meth:`Family.error_kind` says whether a failed write is ``transient``
  (write the chunk again), ``data`` (one or more runs of the chunk are at fault: find them,
  write the others) or ``other`` (the database or the table itself is the problem: stop,
  exit 4); :meth:`Family.is_lock_timeout`;
* locking: :meth:`Family.table_lock` (one writer per runs table, across exports),
  :meth:`Family.bounded_lock_waits` (a schema change waits a bounded time for its table);
* DDL: ``transactional_ddl``, :meth:`Family.make_nullable`, and the exact collation keys are
  compared with (:meth:`Family.key_collation`, :meth:`Family.migrate_key_collations`);
* a chunk's write: :meth:`Family.create_stage`, :meth:`Family.fill_stage`,
  :meth:`Family.drop_stage`, the upsert (:meth:`Family.incoming`,
  :meth:`Family.upsert_clause`) and the history's NULL-safe comparison
  (:meth:`Family.row_differs`, :meth:`Family.changed_runs_sql`,
  :meth:`Family.unversioned_sql`); every one is called once per chunk, never per run;
* the views' macros: ``view_now`` and ``view_macros`` (see :mod:`etl.views`).

:class:`Family` holds what the families share (standard SQL, as PostgreSQL speaks it) and
raises NotImplementedError where each must say its own; README, "Adding a database", lists
what a new family provides.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError

log = logging.getLogger("nsml_etl.dialects")  # its name before the sub-packages

ErrorKind = Literal["transient", "data", "other"]

# Longest database reason quoted in a message: the driver's first line says what failed in a
# sentence; past this it is quoting a value (the run data it refused), not explaining.
MAX_REASON_CHARS = 300

# Stored in place of U+0000 in PostgreSQL text columns, which cannot hold it (envs keeps the
# exact value as the JSON escape \u0000). U+FFFD is Unicode's own "character lost" mark.
NUL_REPLACEMENT = "\ufffd"
# PostgreSQL refuses a btree entry over 2704 bytes (a third of a page); the key columns of the
# runs table and the history index share one entry with the table name and a timestamp.
POSTGRES_INDEX_BYTES = 2600
# MySQL/MariaDB: run keys are VARCHAR(255); mapping keys VARCHAR(700) (3072-byte index limit).
MYSQL_RUN_KEY_CHARS = 255
MYSQL_MAPPING_KEY_CHARS = 700


# How long MySQL waits for another export's schema change or chunk write.
MYSQL_LOCK_TIMEOUT_S = 60
# A statement gave up waiting for a lock another session holds (lock_timeout,
# lock_wait_timeout): transient, and the schema change's own retries look for it.
PG_LOCK_NOT_AVAILABLE = "55P03"
MYSQL_LOCK_WAIT_TIMEOUT = 1205
# Binary collations without trailing-space padding, for every identifier compared as a key:
# under utf8mb4_bin (PAD SPACE) 'r1 ' equals 'r1', so the second run overwrote the first.
MARIADB_KEY_COLLATION = "utf8mb4_nopad_bin"  # MariaDB 10.2 and later
MYSQL_KEY_COLLATION = "utf8mb4_0900_bin"  # MySQL 8.0.17 and later
MARIADB_KEY_COLLATION_SINCE = (10, 2)
MYSQL_KEY_COLLATION_SINCE = (8, 0, 17)
# A column type as information_schema spells it (varchar(255), mediumtext): safe to reuse in DDL.
_PLAIN_COLUMN_TYPE = re.compile(r"[a-z]+(\([0-9]+\))?")

ViewMacro = Callable[..., str]


@dataclass(frozen=True)
class Family:
    """What every family provides. The defaults are standard SQL, as PostgreSQL speaks it;
    what raises NotImplementedError differs in each family we know, so a new one says its own.
    (The plain ``Family()`` classifies errors by their class alone.)"""

    name: str = "sql"  # also the suffix of the views' per-database files (name.<name>.sql)
    # Most columns one table may have.
    max_columns: int = 1600
    label: str = "the database"
    # Whether DDL takes part in transactions (MySQL commits before and after each statement).
    transactional_ddl: bool = True
    # Whether a transaction can roll back to a savepoint (DuckDB has none: a failed statement
    # aborts the whole transaction).
    savepoints: bool = True
    # Whether any key, name and text can be stored as it is (nothing to check before writing).
    stores_any_text: bool = True
    # The query for the most bytes one statement may carry, where the server limits it.
    packet_size_query: str | None = None
    # Whether the table lock's name is one namespace for the whole server (MySQL's GET_LOCK),
    # not per database (PostgreSQL's advisory locks): then the name says the database too.
    server_wide_locks: bool = False

    # The family's SQL words (class constants, not per instance):
    # the driver's parameter marker in a plain executemany (its paramstyle);
    placeholder: ClassVar[str] = "%s"
    # how the history query joins the stage to the runs and history tables;
    stage_join: ClassVar[str] = "JOIN"
    # the views' {{now}} (UTC) and their function-like macros (see etl.views).
    view_now: ClassVar[str] = ""
    view_macros: ClassVar[Mapping[str, ViewMacro]] = {}

    def _missing(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not provide {what}")

    # -- what can be stored --------------------------------------------------------------

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        """Why a run with this key cannot be stored here, or None."""
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        """Why an env key or field name (``what``) cannot be a mapping key here, or None."""
        return None

    def clean_text(self, value: Any) -> Any:
        return value

    @property
    def cleans_text(self) -> bool:
        """Whether :meth:`clean_text` can change a value (else writers skip calling it)."""
        return False

    # -- what its errors mean ------------------------------------------------------------

    def error_kind(self, exc: sa.exc.SQLAlchemyError) -> ErrorKind:
        """What one failure means; the server's error code decides where there is one."""
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return "transient"
        by_code = self.code_kind(getattr(exc, "orig", None))
        if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError) and by_code != "transient":
            return "data"
        if by_code is not None:
            return by_code
        # Raised by the driver itself, without a server code: a socket or connection problem.
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return "transient"
        return "other"

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        """What the driver's error code says; None where the error carries no code."""
        return None

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """A statement gave up waiting for a lock that another session holds."""
        return False

    def open_advice(self, exc: BaseException) -> str | None:
        """What to do when the database cannot be opened for this reason, where the family
        knows better than the driver's words (DuckDB: another process has the file); None
        where the driver's words say it."""
        return None

    # -- locks ---------------------------------------------------------------------------

    def table_lock(self, conn: Connection, key: int, table: str) -> AbstractContextManager[None]:
        """Hold the write lock of runs table ``table`` on ``conn`` while the block runs (one
        writer per table, across exports; ``key``: a number derived from the table's name).
        The block commits or rolls back its own transaction."""
        raise self._missing("table_lock")

    def bounded_lock_waits(self, conn: Connection, seconds: float) -> AbstractContextManager[None]:
        """Statements on ``conn`` wait at most ``seconds`` for a table lock while the block
        runs (entered inside :meth:`table_lock`, whose own wait stays as it is)."""
        raise self._missing("bounded_lock_waits")

    # -- DDL -----------------------------------------------------------------------------

    def make_nullable(self, conn: Connection, table: sa.Table, column: str) -> None:
        """Lift the NOT NULL of one column of an existing table, keeping its rows."""
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(
            f"ALTER TABLE {quote(table.name)} ALTER COLUMN {quote(column)} DROP NOT NULL"
        )

    def write_refusal(self, conn: Connection) -> str | None:
        """Why this database will refuse our writes (None when nothing says so), found in the
        caller's transaction, which rolls back whatever this tried. By default the server's
        own error on the first write is the answer."""
        return None

    def id_sequence(self, table: str) -> sa.Sequence | None:
        """The sequence that numbers the ``id`` of bookkeeping table ``table``, where the
        database has no auto-increment column; None where it has one (an identity, SERIAL,
        AUTO_INCREMENT, SQLite's INTEGER PRIMARY KEY)."""
        return None

    def key_collation(self, dialect: sa.Dialect) -> str | None:
        """The collation that compares keys exactly (case and trailing spaces count), where
        the default collation does not; None where it does."""
        return None

    def migrate_key_collations(self, conn: Connection, key_columns: Mapping[str, set[str]]) -> None:
        """Give the key columns (by table) of tables made before :meth:`key_collation`
        existed that collation, in place. Nothing to do where the default compares exactly."""

    # -- a chunk's write: stage, upsert, history -------------------------------------------
    # Every name these methods take is already quoted.

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        """An empty temporary table ``stage`` with the columns of table ``runs``, for this
        transaction (a failed one may have left it behind)."""
        raise self._missing("create_stage")

    def drop_stage(self, conn: Connection, stage: str) -> None:
        """Drop the stage, once it is merged, unless the commit drops it."""
        raise self._missing("drop_stage")

    def fill_stage(
        self,
        conn: Connection,
        stage: str,
        columns: list[str],
        rows: list[list[Any]],
        timestamps: list[int],
    ) -> None:
        """Insert ``rows`` (lists in ``columns`` order, unquoted names; they may be changed in
        place) into the stage; ``timestamps`` are the indexes of the columns holding
        datetimes. By default the driver's own executemany: SQLAlchemy's per-row parameter
        processing was most of the load time."""
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        markers = ", ".join([self.placeholder] * len(columns))
        conn.exec_driver_sql(
            f"INSERT INTO {stage} ({names}) VALUES ({markers})",  # noqa: S608 - quoted names
            list(map(tuple, rows)),  # SQLAlchemy takes tuples, not lists
        )

    def incoming(self, column: str) -> str:
        """In the upsert's SET: the value the refused insert had for ``column``."""
        return f"excluded.{column}"

    def upsert_clause(self, keys: list[str], sets: str) -> str:
        """What turns ``INSERT INTO runs (...) SELECT ...`` into an upsert on primary key
        ``keys``: an existing run gets the assignments ``sets``."""
        return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"

    def row_differs(self, left: list[str], right: list[str]) -> str:
        """A condition true when two rows of column expressions differ, NULL-safe (NULL and
        NULL are the same, NULL and a value differ) and exact (case and trailing spaces
        count)."""
        return f"ROW({', '.join(left)}) IS DISTINCT FROM ROW({', '.join(right)})"

    def changed_runs_sql(
        self, stage: str, runs: str, history: str, same_run: str, current: str, differs: str
    ) -> str:
        """``SELECT h.id, s.project_id, s.run_name, s.fetched_at``: the staged runs ``s``
        whose stored row ``r`` (``same_run``) ``differs``, with their current version ``h``
        in the history (``current``)."""
        join = self.stage_join
        return (
            f"SELECT h.id, s.project_id, s.run_name, s.fetched_at FROM {stage} s "  # noqa: S608
            f"{join} {runs} r ON {same_run} {join} {history} h ON {current} "
            f"WHERE {differs}"
        )

    def unversioned_sql(self, stage: str, history: str, current: str) -> str:
        """What follows ``FROM`` to select the staged runs ``s`` that have no current version
        in the history (``current`` matches one ``h``)."""
        return f"{stage} s WHERE NOT EXISTS (SELECT 1 FROM {history} h WHERE {current})"  # noqa: S608


def _both(a: str, b: str, sql: str) -> str:
    """``sql``, or NULL when either time is (SQLite's printf would read NULL as 0)."""
    return f"(CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL ELSE {sql} END)"


def _pick(compare: Callable[[str, str], str]) -> ViewMacro:
    """A NULL-safe choice between two times; ``compare(a, b)`` is true when a wins."""
    return lambda a, b: (
        f"(CASE WHEN {a} IS NULL THEN {b} WHEN {b} IS NULL THEN {a} "
        f"WHEN {compare(a, b)} THEN {a} ELSE {b} END)"
    )


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
        "seconds_between": lambda a, b: f"((julianday({b}) - julianday({a})) * 86400.0)",
        # SQLite keeps times as text in more than one layout: compare them as instants. The
        # midpoint is shifted in whole milliseconds (SQLite's own time resolution).
        "later": _pick(lambda a, b: f"julianday({a}) >= julianday({b})"),
        "earlier": _pick(lambda a, b: f"julianday({a}) <= julianday({b})"),
        "midpoint": lambda a, b: _both(
            a,
            b,
            (
                f"strftime('%Y-%m-%d %H:%M:%f', {a}, printf('%+.3f seconds', "
                f"(julianday({b}) - julianday({a})) * 43200.0))"
            ),
        ),
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
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {stage} AS "  # noqa: S608 - quoted name
            f"SELECT * FROM main.{runs} WHERE 0"
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


# PostgreSQL's json cannot turn the escape \u0000 into text (its text holds no NUL), and envs
# keeps NUL as that escape: an escape not itself escaped (an even run of backslashes before
# it) reads as U+FFFD, as in the text columns. Rows written before numbers kept their literal
# may hold NaN or Infinity, which is not JSON: read as {} rather than failing the whole view.
_PG_ENVS_JSON = (
    r"CAST(CASE "
    r"WHEN {x} ~ '(:|,|\[)\s*-?(NaN|Infinity)\s*(,|\}|\])' THEN '{}' "
    r"WHEN strpos({x}, '\u0000') > 0 "
    r"THEN regexp_replace({x}, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') "
    r"ELSE {x} END AS json)"
)


@dataclass(frozen=True)
class PostgresFamily(Family):
    name: str = "postgresql"
    max_columns: int = 1600
    label: str = "PostgreSQL"
    stores_any_text: bool = False

    view_now = "(now() AT TIME ZONE 'UTC')"
    view_macros = {
        "envs_json": lambda x: _PG_ENVS_JSON.replace("{x}", x),
        "days_ago": lambda n: f"((now() AT TIME ZONE 'UTC') - INTERVAL '{int(n)} days')",
        "week_start": lambda x: f"CAST(date_trunc('week', {x}) AS date)",
        "next_week": lambda w: f"CAST({w} + 7 AS date)",
        "seconds_between": lambda a, b: f"EXTRACT(EPOCH FROM ({b} - {a}))",
        "later": _pick(lambda a, b: f"{a} >= {b}"),
        "earlier": _pick(lambda a, b: f"{a} <= {b}"),
        "midpoint": lambda a, b: _both(a, b, f"{a} + ({b} - {a}) / 2"),
        "int_div": lambda a, b: f"(({a}) / ({b}))",
    }

    def write_refusal(self, conn: Connection) -> str | None:
        if conn.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "on":
            return (
                "transactions are read-only here (default_transaction_read_only, "
                "or a standby server)"
            )
        return None

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        if "\x00" in project_id or "\x00" in run_name:
            return "project id or run name holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(project_id) + len(run_name) > POSTGRES_INDEX_BYTES // 4:  # else it surely fits
            size = len(project_id.encode("utf-8", "surrogatepass")) + len(
                run_name.encode("utf-8", "surrogatepass")
            )
            if size > POSTGRES_INDEX_BYTES:
                return (
                    f"project id and run name take {size} bytes; PostgreSQL indexes hold "
                    f"at most {POSTGRES_INDEX_BYTES}"
                )
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        if "\x00" in name:
            return f"{what} {name[:60]!r} holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(name) > POSTGRES_INDEX_BYTES // 4:
            size = len(name.encode("utf-8", "surrogatepass"))
            if size > POSTGRES_INDEX_BYTES:
                return (
                    f"{what} {name[:40]!r}... takes {size} bytes; PostgreSQL indexes hold "
                    f"at most {POSTGRES_INDEX_BYTES}"
                )
        return None

    def clean_text(self, value: Any) -> Any:
        if type(value) is str and "\x00" in value:
            return value.replace("\x00", NUL_REPLACEMENT)
        return value

    @property
    def cleans_text(self) -> bool:
        return True

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        state = getattr(orig, "sqlstate", None)
        if not state:
            return None
        if state[:2] in ("08", "57") or state in ("40001", "40P01", PG_LOCK_NOT_AVAILABLE, "53300"):
            return "transient"  # connection, shutdown, serialization, deadlock, lock timeout
        if state[:2] in ("22", "23", "54"):  # data exception, integrity, program limit
            return "data"
        return "other"

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return getattr(getattr(exc, "orig", None), "sqlstate", None) == PG_LOCK_NOT_AVAILABLE

    @contextmanager
    def table_lock(self, conn: Connection, key: int, table: str) -> Iterator[None]:
        # A transaction-level advisory lock: released by the commit or rollback.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield

    @contextmanager
    def bounded_lock_waits(self, conn: Connection, seconds: float) -> Iterator[None]:
        # Local: it ends with the transaction.
        conn.execute(
            sa.text("SELECT set_config('lock_timeout', :ms, true)"),
            {"ms": str(max(1, round(seconds * 1000)))},
        )
        yield

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        # Dropped at commit; a rollback drops it too.
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {stage} (LIKE {runs}) ON COMMIT DROP")

    def drop_stage(self, conn: Connection, stage: str) -> None:
        pass  # the commit drops it (ON COMMIT DROP)

    def fill_stage(
        self,
        conn: Connection,
        stage: str,
        columns: list[str],
        rows: list[list[Any]],
        timestamps: list[int],
    ) -> None:
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        driver = conn.connection.driver_connection
        assert driver is not None  # a live connection of the engine's pool
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    # LATERAL ... LIMIT 1 walks the indexes once per staged run. A plain join was planned from
    # statistics taken while the tables were still empty (a hash join over the whole history:
    # 50x slower in the middle of a large load).

    def changed_runs_sql(
        self, stage: str, runs: str, history: str, same_run: str, current: str, differs: str
    ) -> str:
        return (
            f"SELECT h.id, s.project_id, s.run_name, s.fetched_at FROM {stage} s "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE {same_run} LIMIT 1) r "
            f"CROSS JOIN LATERAL (SELECT h.id FROM {history} h WHERE {current} LIMIT 1) h "
            f"WHERE {differs}"
        )

    def unversioned_sql(self, stage: str, history: str, current: str) -> str:
        return (
            f"{stage} s LEFT JOIN LATERAL (SELECT h.id FROM {history} h "  # noqa: S608
            f"WHERE {current} LIMIT 1) h ON true WHERE h.id IS NULL"
        )


# MySQL/MariaDB error numbers.
_MYSQL_TRANSIENT = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        MYSQL_LOCK_WAIT_TIMEOUT,
        1213,  # deadlock
        1927,  # connection was killed
        2002,
        2003,
        2006,
        2013,  # cannot connect, server gone away, lost connection
        4031,  # disconnected by the server (idle timeout)
    }
)
_MYSQL_DATA = frozenset(
    {
        1048,  # column cannot be null
        1059,  # identifier too long
        1062,  # duplicate entry
        1071,  # key too long
        1117,  # too many columns
        1118,  # row size too large
        1166,  # incorrect column name
        1264,  # out of range
        1265,  # data truncated
        1292,  # incorrect value
        1300,  # invalid character string
        1366,  # incorrect string value
        1406,  # data too long
        3140,  # invalid JSON text
        4025,  # CHECK constraint failed
    }
)


def _mysql_code(orig: BaseException | None) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


@dataclass(frozen=True)
class MySQLFamily(Family):
    name: str = "mysql"
    # MySQL allows 4,096 columns, but InnoDB refuses the ALTER TABLE past about 385 text
    # columns, and near that no row fits any more (measured on MariaDB 10.11): stop well before.
    max_columns: int = 350
    label: str = "MySQL/MariaDB"
    transactional_ddl: bool = False
    stores_any_text: bool = False
    packet_size_query: str | None = "SELECT @@max_allowed_packet"
    server_wide_locks: bool = True

    view_now = "UTC_TIMESTAMP()"
    view_macros = {
        "envs_json": lambda x: x,  # its JSON functions read an invalid document as NULL
        "days_ago": lambda n: f"(UTC_TIMESTAMP() - INTERVAL {int(n)} DAY)",
        "week_start": lambda x: f"DATE(DATE_SUB({x}, INTERVAL WEEKDAY({x}) DAY))",
        "next_week": lambda w: f"DATE_ADD({w}, INTERVAL 7 DAY)",
        "seconds_between": lambda a, b: f"TIMESTAMPDIFF(MICROSECOND, {a}, {b}) / 1000000.0",
        "later": _pick(lambda a, b: f"{a} >= {b}"),
        "earlier": _pick(lambda a, b: f"{a} <= {b}"),
        "midpoint": lambda a, b: _both(
            a, b, (f"TIMESTAMPADD(MICROSECOND, TIMESTAMPDIFF(MICROSECOND, {a}, {b}) DIV 2, {a})")
        ),
        "int_div": lambda a, b: f"(({a}) DIV ({b}))",
    }

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        for what, part in (("project id", project_id), ("run name", run_name)):
            if len(part) > MYSQL_RUN_KEY_CHARS:
                return (
                    f"{what} is {len(part)} characters; MySQL/MariaDB keys hold at most "
                    f"{MYSQL_RUN_KEY_CHARS}"
                )
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        if len(name) > MYSQL_MAPPING_KEY_CHARS:
            return (
                f"{what} {name[:40]!r}... is {len(name)} characters; MySQL/MariaDB keys "
                f"hold at most {MYSQL_MAPPING_KEY_CHARS}"
            )
        return None

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        code = _mysql_code(orig)
        if code is None:
            return None
        if code in _MYSQL_TRANSIENT:
            return "transient"
        return "data" if code in _MYSQL_DATA else "other"

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return _mysql_code(getattr(exc, "orig", None)) == MYSQL_LOCK_WAIT_TIMEOUT

    @contextmanager
    def table_lock(self, conn: Connection, key: int, table: str) -> Iterator[None]:
        # A named lock of the session, so it is taken (and committed) before the transaction
        # and released after it. Lock names end at 64 characters; table names do not.
        name = f"nsml-etl:{key}"
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": name, "timeout": MYSQL_LOCK_TIMEOUT_S},
        ).scalar()
        conn.commit()
        if got != 1:
            raise DatabaseError(
                f"timed out after {MYSQL_LOCK_TIMEOUT_S}s waiting for another export's "
                f"lock on table {table}"
            )
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            conn.commit()

    @contextmanager
    def bounded_lock_waits(self, conn: Connection, seconds: float) -> Iterator[None]:
        # A session setting (metadata locks, whole seconds).
        conn.execute(
            sa.text("SET SESSION lock_wait_timeout = :s"), {"s": max(1, math.ceil(seconds))}
        )
        try:
            yield
        finally:
            try:  # the connection goes back to the pool: chunk writes wait as before
                conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
            except SQLAlchemyError:
                conn.invalidate()

    def make_nullable(self, conn: Connection, table: sa.Table, column: str) -> None:
        quote = conn.dialect.identifier_preparer.quote
        column_type = table.c[column].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {quote(table.name)} MODIFY {quote(column)} {column_type} NULL"
        )

    def key_collation(self, dialect: sa.Dialect) -> str:
        """The exact (binary, NO PAD) collation of the MySQL or MariaDB server ``dialect`` is
        connected to; :class:`DatabaseError` for a server too old to have one."""
        version = tuple(v for v in dialect.server_version_info or () if isinstance(v, int))
        if getattr(dialect, "is_mariadb", False):  # MySQLDialect's, not the base class's
            if version >= MARIADB_KEY_COLLATION_SINCE:
                return MARIADB_KEY_COLLATION
            wanted = "MariaDB 10.2"
        else:
            if version >= MYSQL_KEY_COLLATION_SINCE:
                return MYSQL_KEY_COLLATION
            wanted = "MySQL 8.0.17"
        raise DatabaseError(
            f"the database server ({'.'.join(map(str, version))}) has no binary NO PAD "
            f"collation, so run names differing only by trailing spaces would be one run; use "
            f"{wanted} or later"
        )

    def migrate_key_collations(self, conn: Connection, key_columns: Mapping[str, set[str]]) -> None:
        """Key columns made with ``utf8mb4_bin`` (which pads trailing spaces) or the table's
        default collation get the exact one, in place, once; later runs only read
        ``information_schema``. Equality only gets stricter, so no primary or unique key
        (runs, mapping tables) can fail on duplicates: two values that were distinct before
        stay distinct."""
        collation = self.key_collation(conn.dialect)
        found = conn.execute(
            sa.text(
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME IN :tables"
            ).bindparams(sa.bindparam("tables", expanding=True)),
            {"tables": sorted(key_columns)},
        ).all()
        changes: dict[str, list[tuple[str, str, str]]] = {}
        for table, column, column_type, nullable, current in found:
            if (
                column in key_columns.get(table, ())
                and current is not None
                and current != collation
                and _PLAIN_COLUMN_TYPE.fullmatch(column_type)
            ):
                changes.setdefault(table, []).append((column, column_type, nullable))
        quote = conn.dialect.identifier_preparer.quote
        for table, columns in changes.items():
            modify = ", ".join(
                f"MODIFY {quote(column)} {column_type} CHARACTER SET utf8mb4 "
                f"COLLATE {collation} {'NULL' if nullable == 'YES' else 'NOT NULL'}"
                for column, column_type, nullable in columns
            )
            log.info(
                "table %s: key columns %s get the exact collation %s (once)",
                table,
                ", ".join(c for c, _, _ in columns),
                collation,
            )
            conn.exec_driver_sql(f"ALTER TABLE {quote(table)} {modify}")

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        # A failed transaction leaves MySQL's temporary table behind.
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {stage}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {stage} LIKE {runs}")

    def drop_stage(self, conn: Connection, stage: str) -> None:
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE {stage}")

    # PyMySQL turns the default fill_stage's executemany into multi-row INSERTs.

    def incoming(self, column: str) -> str:
        return f"VALUES({column})"

    def upsert_clause(self, keys: list[str], sets: str) -> str:
        return f"ON DUPLICATE KEY UPDATE {sets}"

    def row_differs(self, left: list[str], right: list[str]) -> str:
        # BINARY: the text columns' collation ignores case and trailing spaces.
        exact_left = ", ".join(f"BINARY {c}" for c in left)
        exact_right = ", ".join(f"BINARY {c}" for c in right)
        return f"NOT (({exact_left}) <=> ({exact_right}))"


FAMILIES: dict[str, Family] = {
    "sqlite": SQLiteFamily(),
    "postgresql": PostgresFamily(),
    "mysql": MySQLFamily(),
    "mariadb": MySQLFamily(),
}


def family_of(dialect_name: str) -> Family:
    """The family object of a SQLAlchemy dialect name (``engine.dialect.name``)."""
    return FAMILIES[dialect_name]


def first_line(exc: BaseException) -> str:
    """The database's own words for a failure (the first line of the driver's message),
    looking through our wrappers; the class name when there are none, and before SQLAlchemy's
    own terse words (``NoSuchTableError: pg_class``). Never the statement or its values: the
    driver's further lines (PostgreSQL's DETAIL names key values) are dropped, and so is what
    passes :data:`MAX_REASON_CHARS` (MySQL quotes the start of a value it refused)."""
    if not isinstance(exc, sa.exc.SQLAlchemyError) and exc.__cause__ is not None:
        exc = exc.__cause__
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    match orig.args:  # PyMySQL's errors are (code, message) pairs, shown as a tuple
        case (int(), str() as message):
            text = message
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not line or (orig is exc and isinstance(exc, sa.exc.SQLAlchemyError)):
        line = f"{type(orig).__name__}: {line}" if line else type(orig).__name__
    if len(line) > MAX_REASON_CHARS:
        line = line[: MAX_REASON_CHARS - 3].rstrip() + "..."
    return line


def error_kind(family: Family, exc: BaseException) -> ErrorKind:
    """What a failure means, looking through our own wrappers to the database's error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return family.error_kind(exc)
        exc = exc.__cause__  # type: ignore[assignment]
    return "other"
