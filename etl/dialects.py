"""What differs between the database families we write to: limits, and what their errors mean.

One object per family (:func:`family_of` picks it from an engine or connection). The write
path asks it instead of branching on the dialect's name:

* :meth:`Family.key_problem`, :meth:`Family.name_problem`: why a run's key, or one of its env
  keys or field names, cannot be stored (too long for the family's indexes, a NUL where
  PostgreSQL text cannot hold one), checked before writing so that the reason reads well;
* :meth:`Family.error_kind`: whether a failed write is ``transient`` (write the chunk again),
  ``data`` (one or more runs of the chunk are at fault: find them, write the others) or
  ``other`` (the database or the table itself is the problem: stop, exit 4);
* :meth:`Family.clean_text`: a value as the family can store it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

ErrorKind = Literal["transient", "data", "other"]

# Stored in place of U+0000 in PostgreSQL text columns, which cannot hold it (envs keeps the
# exact value as the JSON escape \u0000). U+FFFD is Unicode's own "character lost" mark.
NUL_REPLACEMENT = "\ufffd"
# PostgreSQL refuses a btree entry over 2704 bytes (a third of a page); the key columns of the
# runs table and the history index share one entry with the table name and a timestamp.
POSTGRES_INDEX_BYTES = 2600
# MySQL/MariaDB: run keys are VARCHAR(255); mapping keys VARCHAR(700) (3072-byte index limit).
MYSQL_RUN_KEY_CHARS = 255
MYSQL_MAPPING_KEY_CHARS = 700


@dataclass(frozen=True)
class Family:
    """The SQLite family, and the base of the others."""

    name: str = "sqlite"
    # Most columns one table may have (SQLite's default SQLITE_MAX_COLUMN).
    max_columns: int = 2000
    label: str = "SQLite"
    # Whether DDL takes part in transactions (MySQL commits before and after each statement).
    transactional_ddl: bool = True
    # Whether any key, name and text can be stored as it is (nothing to check before writing).
    stores_any_text: bool = True
    # The query for the most bytes one statement may carry, where the server limits it.
    packet_size_query: str | None = None

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        """Why a run with this key cannot be stored here, or None. SQLite stores any text."""
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


@dataclass(frozen=True)
class PostgresFamily(Family):
    name: str = "postgresql"
    max_columns: int = 1600
    label: str = "PostgreSQL"
    stores_any_text: bool = False

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        if "\x00" in project_id or "\x00" in run_name:
            return "project id or run name holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(project_id) + len(run_name) > POSTGRES_INDEX_BYTES // 4:  # else it surely fits
            size = len(project_id.encode("utf-8", "surrogatepass")) + \
                len(run_name.encode("utf-8", "surrogatepass"))
            if size > POSTGRES_INDEX_BYTES:
                return (f"project id and run name take {size} bytes; PostgreSQL indexes hold "
                        f"at most {POSTGRES_INDEX_BYTES}")
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        if "\x00" in name:
            return f"{what} {name[:60]!r} holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(name) > POSTGRES_INDEX_BYTES // 4:
            size = len(name.encode("utf-8", "surrogatepass"))
            if size > POSTGRES_INDEX_BYTES:
                return (f"{what} {name[:40]!r}... takes {size} bytes; PostgreSQL indexes hold "
                        f"at most {POSTGRES_INDEX_BYTES}")
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
        if state[:2] in ("08", "57") or state in ("40001", "40P01", PG_LOCK_NOT_AVAILABLE,
                                                  "53300"):
            return "transient"  # connection, shutdown, serialization, deadlock, lock timeout
        if state[:2] in ("22", "23", "54"):  # data exception, integrity, program limit
            return "data"
        return "other"


# A statement gave up waiting for a lock another session holds (lock_timeout,
# lock_wait_timeout): transient, and the schema change's own retries look for it.
PG_LOCK_NOT_AVAILABLE = "55P03"
MYSQL_LOCK_WAIT_TIMEOUT = 1205

# MySQL/MariaDB error numbers.
_MYSQL_TRANSIENT = frozenset({
    1040,  # too many connections
    1053,  # server shutdown in progress
    MYSQL_LOCK_WAIT_TIMEOUT,
    1213,  # deadlock
    1927,  # connection was killed
    2002, 2003, 2006, 2013,  # cannot connect, server gone away, lost connection
    4031,  # disconnected by the server (idle timeout)
})
_MYSQL_DATA = frozenset({
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
})


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

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        for what, part in (("project id", project_id), ("run name", run_name)):
            if len(part) > MYSQL_RUN_KEY_CHARS:
                return (f"{what} is {len(part)} characters; MySQL/MariaDB keys hold at most "
                        f"{MYSQL_RUN_KEY_CHARS}")
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        if len(name) > MYSQL_MAPPING_KEY_CHARS:
            return (f"{what} {name[:40]!r}... is {len(name)} characters; MySQL/MariaDB keys "
                    f"hold at most {MYSQL_MAPPING_KEY_CHARS}")
        return None

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        args = getattr(orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code is None:
            return None
        if code in _MYSQL_TRANSIENT:
            return "transient"
        return "data" if code in _MYSQL_DATA else "other"


FAMILIES: dict[str, Family] = {
    "sqlite": Family(),
    "postgresql": PostgresFamily(),
    "mysql": MySQLFamily(),
    "mariadb": MySQLFamily(),
}


def family_of(dialect_name: str) -> Family:
    """The family object of a SQLAlchemy dialect name (``engine.dialect.name``)."""
    return FAMILIES[dialect_name]


def is_lock_timeout(exc: BaseException) -> bool:
    """A statement gave up waiting for a lock that another session holds."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] == MYSQL_LOCK_WAIT_TIMEOUT


def first_line(exc: BaseException) -> str:
    """The database's own words for a failure (the first line of the driver's message),
    looking through our wrappers; the class name when there are none."""
    if not isinstance(exc, sa.exc.SQLAlchemyError) and exc.__cause__ is not None:
        exc = exc.__cause__
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def error_kind(family: Family, exc: BaseException) -> ErrorKind:
    """What a failure means, looking through our own wrappers to the database's error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return family.error_kind(exc)
        exc = exc.__cause__  # type: ignore[assignment]
    return "other"
