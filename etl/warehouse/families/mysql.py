"""MySQL and MariaDB (one family): server-wide named locks, DDL outside transactions, key
columns with an exact (binary, NO PAD) collation, and keys bounded in characters."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ...errors import DatabaseError
from ..failures import ErrorKind
from .base import Family, ms_macros, null_safe_pick

log = logging.getLogger("nsml_etl.dialects")  # its name before the sub-packages

# MySQL/MariaDB: run keys are VARCHAR(255); mapping keys VARCHAR(700) (3072-byte index limit).
MYSQL_RUN_KEY_CHARS = 255
MYSQL_MAPPING_KEY_CHARS = 700
# How long MySQL waits for another export's schema change or chunk write.
MYSQL_LOCK_TIMEOUT_S = 60
# A statement gave up waiting for a lock another session holds (lock_wait_timeout): transient,
# and the schema change's own retries look for it.
MYSQL_LOCK_WAIT_TIMEOUT = 1205
# Binary collations without trailing-space padding, for every identifier compared as a key:
# under utf8mb4_bin (PAD SPACE) 'r1 ' equals 'r1', so the second run overwrote the first.
MARIADB_KEY_COLLATION = "utf8mb4_nopad_bin"  # MariaDB 10.2 and later
MYSQL_KEY_COLLATION = "utf8mb4_0900_bin"  # MySQL 8.0.17 and later
MARIADB_KEY_COLLATION_SINCE = (10, 2)
MYSQL_KEY_COLLATION_SINCE = (8, 0, 17)
# A column type as information_schema spells it (varchar(255), mediumtext): safe to reuse in DDL.
_PLAIN_COLUMN_TYPE = re.compile(r"[a-z]+(\([0-9]+\))?")


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


_MYSQL_EPOCH = "CAST('1970-01-01 00:00:00' AS DATETIME(6))"


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

    view_now = "UTC_TIMESTAMP(6)"  # UTC_TIMESTAMP() has whole seconds
    view_macros = {
        "envs_json": lambda x: x,  # its JSON functions read an invalid document as NULL
        "days_ago": lambda n: f"(UTC_TIMESTAMP(6) - INTERVAL {int(n)} DAY)",
        "week_start": lambda x: f"DATE(DATE_SUB({x}, INTERVAL WEEKDAY({x}) DAY))",
        "next_week": lambda w: f"DATE_ADD({w}, INTERVAL 7 DAY)",
        "days_before": lambda x, n: f"({x} - INTERVAL {int(n)} DAY)",
        **ms_macros(
            lambda x: f"((TIMESTAMPDIFF(MICROSECOND, {_MYSQL_EPOCH}, {x}) + 500) DIV 1000)",
            lambda m: f"TIMESTAMPADD(MICROSECOND, ({m}) * 1000, {_MYSQL_EPOCH})",
            "DIV 2",
        ),
        "later": null_safe_pick(lambda a, b: f"{a} >= {b}"),
        "earlier": null_safe_pick(lambda a, b: f"{a} <= {b}"),
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
