"""One object per database family: what differs between the databases we write to.

:class:`~.base.Family` (``base``) holds what the families share and what each must say; each
family is a module of its own (``sqlite``, ``postgresql``, ``mysql``, ``duckdb``).
:data:`FAMILIES` is the registry that :func:`family_of` reads: a new database is one new module
in this package and one line in it.
"""

from __future__ import annotations

from .base import Family
from .duckdb import DuckDBFamily
from .mysql import MySQLFamily
from .postgresql import PostgresFamily
from .sqlite import SQLiteFamily

# The registry, by SQLAlchemy dialect name (``engine.dialect.name``).
FAMILIES: dict[str, Family] = {
    "sqlite": SQLiteFamily(),
    "postgresql": PostgresFamily(),
    "mysql": MySQLFamily(),
    "mariadb": MySQLFamily(),
    "duckdb": DuckDBFamily(),
}


def family_of(dialect_name: str) -> Family:
    """The family object of a SQLAlchemy dialect name (``engine.dialect.name``)."""
    return FAMILIES[dialect_name]


__all__ = [
    "FAMILIES",
    "DuckDBFamily",
    "Family",
    "MySQLFamily",
    "PostgresFamily",
    "SQLiteFamily",
    "family_of",
]
