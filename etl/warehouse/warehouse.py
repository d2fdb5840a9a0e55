"""The one object a command opens on its database: :class:`Warehouse`.

Every command of the library opens one, once (``with Warehouse.open(settings, WRITE) as wh:``),
and nothing else makes an engine. Opening makes the checks that belong before the first
request, in one place, so no command can forget one: the database can be reached, a SQLite file
not made yet may be made (its folder takes files), the database takes writes, the runs table (if
there is one) is ours, and on MySQL and MariaDB the server has an exact collation for keys.
What a command may do is its :class:`Purpose`: a reading command (``report``, ``gpu-servers
list``, the metrics' look at past batches) is refused a SQLite file that does not exist, and a
dry run (``export --dry-run``, ``check``) makes the checks of a write and creates nothing.

The warehouse owns the engine (disposed of on close) and the database's family, and is made of
the parts that work on them: the runs table's :class:`~.schema.Schema`, the run writer
(:class:`~.store.RunStore`), the export bookkeeping (:class:`~.batches.BatchLog`) and the GPU
servers table (:mod:`.gpuservers`). The reporting views are created over a warehouse by
:func:`nsml_etl.reporting.views.create_views` (the reports sit above the warehouse, which never
imports them).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from functools import cached_property
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..config import DEFAULT_MAX_ENV_COLUMNS, Settings
from ..errors import DatabaseError
from ..model import Pair
from ..tablenames import BATCHES_TABLE
from ..urls import database_file
from . import gpuservers
from .batches import BatchLog
from .engine import (
    check_database,
    check_table,
    check_writable,
    create_engine,
    database_file_missing,
    describe_database,
    write_refusal,
)
from .failures import first_line
from .families import Family, family_of
from .gpuservers import GpuServer
from .schema import Schema
from .store import RunStore


class Purpose(enum.Enum):
    """What a command may do to its database, and so which checks opening makes."""

    # export, load, views, gpu-servers set/unset/load: may create the SQLite file and the
    # tables; the database must take writes and the runs table must be ours.
    WRITE = "write"
    # export --dry-run, check: every check of a write, and nothing created (a SQLite file not
    # made yet stays so: the warehouse is then new, and has no stored runs).
    DRY_RUN = "dry run"
    # report, gpu-servers list, the metrics: reads what is there; a SQLite file that does not
    # exist is refused (connecting would create it), and no write is checked for.
    READ = "read"


WRITE, DRY_RUN, READ = Purpose.WRITE, Purpose.DRY_RUN, Purpose.READ


class Warehouse:
    """One database, opened and checked for one command (see the module docstring); use
    :meth:`open`, as a context manager."""

    def __init__(
        self,
        engine: Engine,
        purpose: Purpose,
        table: str | None,
        max_env_columns: int = DEFAULT_MAX_ENV_COLUMNS,
    ) -> None:
        self.engine = engine
        self.purpose = purpose
        self.table_name = table
        self.max_env_columns = max_env_columns
        self.family: Family = family_of(engine.dialect.name)
        # Whether the runs table was there when the warehouse was opened (it is then ours).
        self.had_table = False

    @classmethod
    def open(
        cls,
        source: Settings | str,
        purpose: Purpose,
        *,
        table: str | None = None,
        max_env_columns: int = DEFAULT_MAX_ENV_COLUMNS,
        require_table: bool = False,
    ) -> Self:
        """The database of ``source`` (resolved settings: their ``db_url``, ``table`` and
        ``max_env_columns``; or a URL, with ``table`` and ``max_env_columns`` given here), checked
        for ``purpose`` before anything else is sent. A URL without ``table`` opens the database
        alone (the GPU servers table): no runs table is looked at. ``require_table``: the runs
        table must exist already (``views`` and ``report`` read what an export wrote, so a
        mistyped ``--db`` or ``--table`` must not pass for an empty database).

        Raises :class:`~nsml_etl.errors.InputError` or :class:`DatabaseError` (a URL that is
        not one, an unsupported database or a missing driver: ``.setting`` is ``"db_url"``; then
        any check that failed), with the engine already disposed of."""
        if isinstance(source, Settings):
            db_url, table, max_env_columns = source.db_url, source.table, source.max_env_columns
        else:
            db_url = source
        warehouse = cls(create_engine(db_url), purpose, table, max_env_columns)
        try:
            warehouse._check(require_table)
        except BaseException:
            warehouse.close()
            raise
        return warehouse

    def _check(self, require_table: bool) -> None:
        """The checks of opening, in the order the commands made them before there was one
        place for them (so each database receives the same statements)."""
        check_database(self.engine)  # a missing SQLite file: its folder must take files
        if self.purpose is READ:
            _refuse_missing_database_file(self.engine)
        else:
            check_writable(self.engine)
        if self.table_name is not None:
            self.had_table = check_table(self.engine, self.table_name)
            if require_table:
                _require_runs_table(self.engine, self.table_name)
        if self.purpose is not WRITE and self.is_new:
            _never_connect(self.engine)

    # -- the database ----------------------------------------------------------------------

    @property
    def url(self) -> sa.URL:
        return self.engine.url

    @property
    def description(self) -> str:
        """The database for people (:func:`~.engine.describe_database`: never a password)."""
        return describe_database(self.engine.url)

    @property
    def is_new(self) -> bool:
        """A SQLite file not made yet: connecting would create it (a write makes it)."""
        return database_file_missing(self.engine.url)

    def write_refusal(self) -> str | None:
        """Why the database refuses writes (read-only file or session), or None."""
        return write_refusal(self.engine)

    # -- its parts -------------------------------------------------------------------------

    @cached_property
    def schema(self) -> Schema:
        """The runs table's schema and the bookkeeping tables beside it."""
        return Schema(self.engine, self._runs_table_name(), self.max_env_columns)

    @cached_property
    def store(self) -> RunStore:
        """The writer and reader of the runs table's rows."""
        return RunStore(self.schema)

    def batch_log(self, command: str, options: dict[str, Any]) -> BatchLog:
        """The batch row of one export or load (``options`` free of secrets)."""
        return BatchLog(self.schema, command, options)

    def stored_pairs(self, statuses: Iterable[str]) -> set[Pair]:
        """Stored runs whose status is one of ``statuses``: none in a database not made yet
        (which a dry run does not make by looking)."""
        if self.is_new:
            return set()
        return self.store.pairs_with_status(statuses)

    def stored_pairs_with_nodes(self) -> set[Pair]:
        """Stored runs with at least one stored node (export --nodes): none in a database not
        made yet."""
        if self.is_new:
            return set()
        return self.store.pairs_with_nodes()

    def set_gpu_servers(self, servers: Iterable[GpuServer]) -> int:
        """Insert or replace these servers' GPU counts (:func:`.gpuservers.set_servers`)."""
        return gpuservers.set_servers(self.engine, servers)

    def unset_gpu_servers(self, codes: Iterable[int]) -> int:
        """Forget these servers' GPU counts (:func:`.gpuservers.unset_servers`)."""
        return gpuservers.unset_servers(self.engine, codes)

    def list_gpu_servers(self, runs_table: str) -> tuple[list[GpuServer], list[tuple[Any, ...]]]:
        """The known servers, and those ``runs_table`` has runs on without a count
        (:func:`.gpuservers.list_servers`); reads only."""
        return gpuservers.list_servers(self.engine, runs_table)

    def suggest_gpu_servers(self, runs_table: str) -> list[gpuservers.Suggestion]:
        """The GPU counts the names of the servers without one state
        (:func:`.gpuservers.suggest_servers`); reads only."""
        return gpuservers.suggest_servers(self.engine, runs_table)

    def count_servers_without_gpus(self, runs_table: str) -> int:
        """How many servers ``runs_table`` has runs on without a GPU count
        (:func:`.gpuservers.count_servers_without_gpus`); reads only."""
        return gpuservers.count_servers_without_gpus(self.engine, runs_table)

    def _runs_table_name(self) -> str:
        if self.table_name is None:
            raise ValueError("this warehouse was opened without a runs table (give table=)")
        return self.table_name

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection of the engine."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _never_connect(engine: Engine) -> None:
    """A dry run or a read of a SQLite file not made yet must not make it: connecting would.
    What reaches here answers without connecting (:attr:`Warehouse.is_new`); a connection
    anyway is a bug, stopped before the file is made."""

    @sa.event.listens_for(engine, "do_connect")
    def _refuse(*_args: Any) -> None:
        raise RuntimeError(
            f"{describe_database(engine.url)} does not exist and this command must not create it"
        )


def _refuse_missing_database_file(engine: Engine) -> None:
    """:class:`DatabaseError` (exit 4) for a SQLite file that does not exist, naming a file
    close to it: a command that reads never creates a database (connecting would)."""
    path = database_file(engine.url)
    if path is None or path.exists():
        return
    siblings = [p.name for p in path.parent.glob(f"*{path.suffix}") if p.is_file()]
    near = difflib.get_close_matches(path.name, siblings, n=1)
    hint = (
        f"; did you mean {path.parent / near[0]}?"
        if near
        else "; check --db (export or load creates it)"
    )
    where = describe_database(engine.url)
    raise DatabaseError(f"no nsml-etl tables in {where}: the file does not exist{hint}")


def _require_runs_table(engine: Engine, table: str) -> None:
    """:class:`DatabaseError` (exit 4) unless ``table`` exists, naming the nsml-etl tables the
    database has instead (a SQLite file that does not exist is never opened)."""
    where = describe_database(engine.url)
    _refuse_missing_database_file(engine)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table(table):
                return
            others = []
            if inspector.has_table(BATCHES_TABLE):
                batches = sa.table(BATCHES_TABLE, sa.column("table_name"))
                named = conn.execute(sa.select(batches.c.table_name).distinct()).scalars()
                others = sorted(name for name in named if name and inspector.has_table(name))
            conn.rollback()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading the tables of {where} failed: {first_line(exc)}") from None
    if others:
        raise DatabaseError(
            f"no table {table} in {where}; its nsml-etl tables: "
            f"{', '.join(others)} (choose one with --table)"
        )
    raise DatabaseError(
        f"no nsml-etl tables in {where}: check --db and --table, or run export or load first"
    )
