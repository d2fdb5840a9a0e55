"""What a database failure says and means, for every module that reports or handles one:
:func:`first_line` (the database's own words, short and without the run data) and
:func:`error_kind` (transient, data or other, looking through our own wrappers; the family
decides from its server's error codes)."""

from __future__ import annotations

from typing import Literal, Protocol

import sqlalchemy as sa

ErrorKind = Literal["transient", "data", "other"]

# Longest database reason quoted in a message: the driver's first line says what failed in a
# sentence; past this it is quoting a value (the run data it refused), not explaining.
MAX_REASON_CHARS = 300


class ClassifiesErrors(Protocol):
    """What :func:`error_kind` asks of a family: its own
    :meth:`~etl.warehouse.families.Family.error_kind` (a Protocol, so that this module needs
    none of the families, which use it)."""

    def error_kind(self, exc: sa.exc.SQLAlchemyError) -> ErrorKind: ...


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


def error_kind(family: ClassifiesErrors, exc: BaseException) -> ErrorKind:
    """What a failure means, looking through our own wrappers to the database's error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return family.error_kind(exc)
        exc = exc.__cause__  # type: ignore[assignment]
    return "other"
