"""The engine and its URL: which databases and drivers nsml-etl supports, and the checks made
before the first request (the database can be reached; the runs table, if there is one, is ours).

``create_engine`` turns a ``--db`` URL into an engine with our settings (the driver we ship, UTF-8
throughout, SQL parameters never echoed in errors); a URL we cannot use is a clear error, with
any password masked (:func:`etl.urls.redact_url`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from ..config import DEFAULT_DB_URL
from ..errors import DatabaseError, InputError
from ..urls import FILE_DATABASES, database_file, redact_url
from .failures import first_line
from .families import family_of
from .tables import refuse_foreign_table

# How long SQLite waits for another writer (an overlapping cron job) before giving up.
SQLITE_BUSY_TIMEOUT_S = 60

# URL backend -> (driver we use, extra that installs it)
BACKENDS = {
    "sqlite": ("pysqlite", None),
    "postgresql": ("psycopg", "postgres"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
    # nsml-etl's subclass of duckdb-engine's dialect (etl.warehouse.duckdb_dialect), under the
    # driver name of duckdb-engine itself.
    "duckdb": ("duckdb_engine", "duckdb"),
}
# Backend names other tools print (libpq, Heroku, Django's dj-database-url) for one of ours.
BACKEND_ALIASES = {"postgres": "postgresql"}


def describe_database(url: sa.URL) -> str:
    """The database for people: the file of an embedded database (SQLite, DuckDB), or the
    database and host (never a user name or password)."""
    if url.get_backend_name() in FILE_DATABASES:
        return f"{FILE_DATABASES[url.get_backend_name()]} database {url.database or ':memory:'}"
    where = f"{url.host or 'localhost'}{':' + str(url.port) if url.port else ''}"
    return f"{url.get_backend_name()} database {url.database!r} on {where}"


def create_engine(db_url: str) -> Engine:
    """An engine for a supported URL; :class:`DatabaseError` (exit 4) names what is wrong."""
    try:
        url: sa.URL | None = make_url(db_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        url = None
    # No host holds an @: one there is the rest of a password the parser cut at its first @
    # (and the driver would name it in its error).
    if url is None or "@" in (url.host or ""):
        escape = (
            "; percent-encode @, : and / in a password (@ as %40)" if db_url.count("@") > 1 else ""
        )
        raise InputError.about(
            "db_url",
            f"{redact_url(db_url)!r} is not a database URL; expected e.g. "
            f"{DEFAULT_DB_URL} or postgresql+psycopg://user@host/db{escape}",
        )
    backend = url.get_backend_name()
    if backend in BACKEND_ALIASES:  # postgres:// is PostgreSQL, with whatever driver it names
        backend = BACKEND_ALIASES[backend]
        url = url.set(drivername=backend + url.drivername.removeprefix(url.get_backend_name()))
    if backend not in BACKENDS:
        raise DatabaseError.about(
            "db_url",
            f"{redact_url(db_url)}: unsupported database {backend!r}; "
            f"use one of: {', '.join(BACKENDS)}",
        )
    driver, extra = BACKENDS[backend]
    if url.drivername == backend:  # plain postgresql:// or mysql://: pick the driver we ship
        url = url.set(drivername=f"{backend}+{driver}")
    kwargs: dict[str, Any] = {"hide_parameters": True}  # SQL errors must not echo run data
    if backend in ("mysql", "mariadb"):
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
        raise DatabaseError.about(
            "db_url", f"{redact_url(db_url)}: the {asked} database driver is not installed; {hint}"
        ) from None
    except (ArgumentError, ValueError, TypeError) as exc:
        raise DatabaseError.about("db_url", f"{redact_url(db_url)}: {exc}") from None
    if backend == "sqlite":
        _make_sqlite_transactional(engine)
    return engine


def _make_sqlite_transactional(engine: Engine) -> None:
    # pysqlite commits before DDL and begins lazily; SQLAlchemy's documented recipe takes
    # over so every transaction (DDL included) is real, and BEGIN IMMEDIATE takes the write
    # lock up front, which serializes overlapping exports instead of deadlocking them.
    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # Each chunk is staged in a temporary table: keep it in memory, not in a temp file.
        dbapi_connection.execute("PRAGMA temp_store = MEMORY")

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def check_database(engine: Engine) -> None:
    """Connect once, before any API request, so a wrong URL fails fast and touches nothing."""
    url = engine.url
    path = database_file(url)
    if path is not None and not path.exists():  # do not create the file just to check it
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise DatabaseError(f"{describe_database(url)}: directory {parent} does not exist")
        refusal = _folder_refuses_files(parent)
        if refusal is not None:
            raise DatabaseError(
                f"{describe_database(url)}: directory {parent} is not writable ({refusal}); "
                "the database file cannot be created there: choose another --db"
            )
        return
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
    except SQLAlchemyError as exc:
        raise cannot_connect(engine, exc) from None


def cannot_connect(engine: Engine, exc: SQLAlchemyError) -> DatabaseError:
    """The error of a database that could not be opened: the driver's words, and what to do
    where the family knows (:meth:`Family.open_advice`)."""
    message = f"cannot connect to {describe_database(engine.url)}: {first_line(exc)}"
    advice = family_of(engine.dialect.name).open_advice(exc)
    return DatabaseError(message if advice is None else f"{message}; {advice}")


def _folder_refuses_files(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (the OS's words), or None. Tried for real,
    with a probe file removed at once: ``os.access`` answers yes to root whatever the folder
    (an immutable folder, a read-only mount), and cron jobs often run as root."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".nsml-etl-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def write_refusal(engine: Engine) -> str | None:
    """Why the database will refuse writes (a read-only SQLite file or folder, a read-only
    PostgreSQL session), tried in a transaction that is rolled back; None when it will not,
    and for a SQLite file not made yet (:func:`check_database` checks its folder)."""
    if database_file_missing(engine.url):
        return None
    try:
        with engine.connect() as conn:
            refusal = family_of(engine.dialect.name).write_refusal(conn)
            conn.rollback()
    except SQLAlchemyError as exc:
        raise cannot_connect(engine, exc) from None
    return refusal


def check_writable(engine: Engine) -> None:
    """Before any request, refuse a database that would take none of the runs: today's
    export would fetch them all and then fail writing the first."""
    refusal = write_refusal(engine)
    if refusal is not None:
        raise DatabaseError(
            f"{describe_database(engine.url)} is read-only: {refusal}; make the file and its "
            "folder writable (the database writes a journal beside the file) or choose another --db"
            if database_file(engine.url) is not None
            else f"{describe_database(engine.url)} is read-only: {refusal}; choose a writable --db"
        )


def check_table(engine: Engine, table: str) -> bool:
    """Before any request, refuse a runs table nsml-etl did not make, changing nothing (another
    tool's ``nsml_runs`` would get our columns added, or its rows duplicated on every rerun);
    on MySQL and MariaDB, refuse a server without an exact collation for run names too.
    Returns whether the table exists (it is then one of ours)."""
    if database_file_missing(engine.url):
        return False  # a new database: nothing there yet, and connecting would create the file
    try:
        with engine.connect() as conn:
            family_of(engine.dialect.name).key_collation(conn.dialect)  # MySQL: one exists
            exists = refuse_foreign_table(conn, table)
            conn.rollback()
            return exists
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"reading the schema of table {table} failed: {first_line(exc)}"
        ) from None


def database_file_missing(url: sa.URL) -> bool:
    """A SQLite URL whose file is not there yet: connecting would create it."""
    path = database_file(url)
    return path is not None and not path.exists()
