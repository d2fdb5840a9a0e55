"""What every database family provides, and the defaults they share (standard SQL, as
PostgreSQL speaks it): the :class:`Family` base class.

The write path (:mod:`etl.warehouse.store`), the schema (:mod:`etl.warehouse.schema`) and the
views (:mod:`etl.reporting.views`) ask a family object instead of branching on the dialect's
name:

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
* the views' macros: ``view_now`` and ``view_macros``, each family's own SQL for the
  ``{{...}}`` names that :mod:`etl.reporting.views` expands; :func:`unless_either_null` and
  :func:`null_safe_pick` build the macros that several families share the shape of.

What raises NotImplementedError differs in each family we know, so a new one says its own;
README, "Adding a database", lists what a new family provides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..failures import ErrorKind

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


# -- building blocks of the families' view macros -----------------------------------------


# Time arithmetic in the views is done in whole milliseconds on every database, rounded half up
# from the stored microseconds: SQLite's own time functions keep milliseconds, PostgreSQL and
# MariaDB microseconds, and midpoints, waits and hours computed at each one's precision (and
# SQLite's in floating-point julian days) came out a little apart for the same history. In
# integers, the same history gives the same figures everywhere.
def ms_macros(
    ms: Callable[[str], str], from_ms: Callable[[str], str], halve: str = "/ 2"
) -> dict[str, Callable[..., str]]:
    """``seconds_between`` and ``midpoint`` from a family's ``ms(x)`` (a time as integer
    milliseconds since 1970), ``from_ms(m)`` (back to a time) and its integer halving."""
    return {
        "seconds_between": lambda a, b: f"(({ms(b)} - {ms(a)}) / 1000.0)",
        # integer division truncates toward zero on all three: the same moment everywhere
        "midpoint": lambda a, b: unless_either_null(
            a, b, from_ms(f"{ms(a)} + ({ms(b)} - {ms(a)}) {halve}")
        ),
    }


def unless_either_null(a: str, b: str, sql: str) -> str:
    """``sql``, or NULL when either time is (SQLite's printf would read NULL as 0)."""
    return f"(CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL ELSE {sql} END)"


def null_safe_pick(compare: Callable[[str, str], str]) -> ViewMacro:
    """A NULL-safe choice between two times; ``compare(a, b)`` is true when a wins."""
    return lambda a, b: (
        f"(CASE WHEN {a} IS NULL THEN {b} WHEN {b} IS NULL THEN {a} "
        f"WHEN {compare(a, b)} THEN {a} ELSE {b} END)"
    )
