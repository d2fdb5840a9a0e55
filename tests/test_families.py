"""What each database family's errors mean: retried, split to find the run at fault, or fatal.
The errors are the drivers' own classes, wrapped by SQLAlchemy as the write path sees them.
And that each family says everything the shared code asks of it."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import duckdb
import psycopg.errors as pg
import pymysql.err as my
import pytest
import sqlalchemy as sa

from nsml_etl.errors import DatabaseError
from nsml_etl.warehouse.failures import error_kind
from nsml_etl.warehouse.families import FAMILIES, Family, family_of


def _wrapped(orig: BaseException, kind=sa.exc.OperationalError, invalidated=False):
    error = DatabaseError("writing 3 runs to table nsml_runs failed")
    error.__cause__ = kind("INSERT ...", {}, orig, connection_invalidated=invalidated)
    return error


def _sqlite_error(sql: str, *setup: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    for statement in setup:
        conn.execute(statement)
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute(sql)
    return caught.value


def test_sqlite_errors(tmp_path):
    family = family_of("sqlite")
    columns = ", ".join(f"c{i} TEXT" for i in range(2001))
    too_many = _sqlite_error(f"CREATE TABLE t ({columns})")
    assert error_kind(family, _wrapped(too_many)) == "data"  # an OperationalError, yet no retry
    duplicate = _sqlite_error(
        "INSERT INTO t VALUES (1)", "CREATE TABLE t (a PRIMARY KEY)", "INSERT INTO t VALUES (1)"
    )
    assert error_kind(family, _wrapped(duplicate, sa.exc.IntegrityError)) == "data"
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        waiter.execute("BEGIN IMMEDIATE")
    assert error_kind(family, _wrapped(busy.value)) == "transient"
    missing = _sqlite_error("SELECT * FROM nowhere")
    assert error_kind(family, _wrapped(missing)) == "other"  # the table's problem: exit 4


@pytest.mark.parametrize(
    "orig, expected",
    [
        (pg.DeadlockDetected("deadlock"), "transient"),
        (pg.LockNotAvailable("lock timeout"), "transient"),
        (pg.AdminShutdown("restart"), "transient"),
        (pg.ProgramLimitExceeded("index row size 3016 exceeds maximum 2704"), "data"),
        (pg.TooManyColumns("tables can have at most 1600 columns"), "data"),
        (pg.CharacterNotInRepertoire("invalid byte sequence"), "data"),
        (pg.CheckViolation("check"), "data"),
        (pg.InsufficientPrivilege("permission denied"), "other"),
        (pg.DiskFull("no space left"), "other"),
        (pg.OperationalError("server closed the connection unexpectedly"), "transient"),
    ],
)
def test_postgresql_errors(orig, expected):
    assert error_kind(family_of("postgresql"), _wrapped(orig)) == expected


def _duckdb_error(sql: str) -> BaseException:
    """DuckDB's own exception for ``sql``, as a failed write would raise it."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY, n INTEGER)")
    con.execute("INSERT INTO t VALUES ('a', 1)")
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        return exc
    finally:
        con.close()
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("INSERT INTO t VALUES ('a', 2)", "data"),  # a duplicate key
        ("INSERT INTO t VALUES ('b', 'x')", "data"),  # not a number
        ("INSERT INTO t VALUES ('b', 99999999999)", "data"),  # out of the integer's range
        ("SELECT * FROM nowhere", "other"),  # the table's problem: exit 4
        ("ALTER TABLE t ADD COLUMN k VARCHAR", "other"),
    ],
)
def test_duckdb_errors(sql, expected):
    orig = _duckdb_error(sql)
    assert error_kind(family_of("duckdb"), _wrapped(orig)) == expected


def test_duckdb_write_conflicts_are_transient():
    assert (
        error_kind(family_of("duckdb"), _wrapped(duckdb.TransactionException("conflict")))
        == "transient"
    )


@pytest.mark.parametrize(
    "orig, expected",
    [
        (my.OperationalError(1213, "Deadlock found"), "transient"),
        (my.OperationalError(1205, "Lock wait timeout exceeded"), "transient"),
        (my.OperationalError(2013, "Lost connection"), "transient"),
        (my.OperationalError(1118, "Row size too large (> 8126)"), "data"),
        (my.OperationalError(1117, "Too many columns"), "data"),
        (my.OperationalError(1071, "Specified key was too long"), "data"),
        (my.DataError(1406, "Data too long for column"), "data"),
        (my.IntegrityError(1062, "Duplicate entry"), "data"),
        (my.OperationalError(1142, "INSERT command denied"), "other"),
    ],
)
def test_mysql_errors(orig, expected):
    assert error_kind(family_of("mariadb"), _wrapped(orig)) == expected


def test_a_lost_connection_is_transient_whatever_the_code():
    orig = my.OperationalError(1118, "Row size too large")
    assert error_kind(family_of("mysql"), _wrapped(orig, invalidated=True)) == "transient"


def test_an_error_of_our_own_is_no_database_error():
    assert error_kind(family_of("sqlite"), DatabaseError("no cause")) == "other"


@pytest.mark.parametrize(
    "dialect, lock_timeout",
    [
        ("postgresql", pg.LockNotAvailable("canceling statement due to lock timeout")),
        ("mariadb", my.OperationalError(1205, "Lock wait timeout exceeded")),
    ],
)
def test_a_lock_timeout_is_recognized_by_its_own_family_only(dialect, lock_timeout):
    error = _wrapped(lock_timeout)
    assert family_of(dialect).is_lock_timeout(error.__cause__)
    assert not family_of(dialect).is_lock_timeout(_wrapped(pg.DeadlockDetected("d")).__cause__)
    assert not family_of(dialect).is_lock_timeout(_wrapped(my.OperationalError(1213)).__cause__)


SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@pytest.mark.parametrize("dialect", sorted(FAMILIES))
def test_every_family_provides_what_the_shared_code_asks(dialect):
    """A family missing one of these would fail only on its own database, mid-export; this
    says so without one (README, "Adding a database")."""
    family = family_of(dialect)
    for method in ("table_lock", "bounded_lock_waits", "create_stage", "drop_stage"):
        assert getattr(type(family), method) is not getattr(Family, method), method
    # Every macro the views of this family use (shared files and its own) has its SQL.
    files = [
        p
        for p in SQL_DIR.glob("*.sql")
        if p.name.count(".") == 1 or p.name.endswith(f".{family.name}.sql")
    ]
    used = set(re.findall(r"\{\{(\w+)\(", "".join(p.read_text() for p in files)))
    assert "days_ago" in used and used - {"include"} <= set(family.view_macros)
    assert family.view_now
