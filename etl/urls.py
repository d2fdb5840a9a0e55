"""Database URLs read without connecting: :func:`redact_url` masks what could be a secret,
:func:`database_file` finds the file of an embedded database's URL (SQLite, DuckDB) and
:func:`file_database_keeps_nothing` refuses one that has none.

Shared by the settings (``Settings.public_dict``, the ``db_url`` check) and the database
module, so that neither has to import the other for it; it imports only SQLAlchemy's URL parser.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Query parameters that carry credentials (libpq's password, sslpassword, tokens, ...).
_SECRET_WORDS = "pass|pwd|secret|token|key"
_SECRET_QUERY_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with its password and credential-like query values masked; never fails."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _redact_text(url)
    if parsed.password is not None and url.count("@") > 1:
        # An @ left unescaped in the password (or the user name): the parser ends the password
        # at the first @ and reads the rest of it as the host. Mask up to the last @ instead.
        return _redact_text(url)
    secret_keys = [k for k in parsed.query if _SECRET_QUERY_KEY.search(k)]
    if secret_keys:
        parsed = parsed.update_query_dict({k: "***" for k in secret_keys})
    return parsed.render_as_string(hide_password=True)


# The embedded databases: a file named by the URL's path, opened (and created) by the driver.
FILE_DATABASES = {"sqlite": "SQLite", "duckdb": "DuckDB"}
# An example URL of each, for messages.
FILE_DATABASE_EXAMPLES = {
    "sqlite": "sqlite:///nsml_runs.db",
    "duckdb": "duckdb:///nsml_runs.duckdb",
}


def database_file(url: sa.URL) -> Path | None:
    """The file of an embedded database's URL (:data:`FILE_DATABASES`); None for servers and
    in-memory databases. With ``uri=true`` a SQLite database that starts with ``file:`` is a
    SQLite URI (``file:runs.db``, ``file:///srv/runs.db``), whose path is the file; without it
    SQLite opens a file of that very name (``file:runs.db``), so that is the file. DuckDB's
    ``:memory:`` (and ``:memory:NAME``) is in memory."""
    database = url.database
    backend = url.get_backend_name()
    if backend not in FILE_DATABASES or not database or database.startswith(":memory:"):
        return None
    if (
        backend == "sqlite"
        and database.startswith("file:")
        and sa.util.asbool(_last(url.query.get("uri", "false")))
    ):
        path = unquote(urlsplit(database).path)
        in_memory = _last(url.query.get("mode", "")) == "memory"
        return None if in_memory or path in ("", ":memory:") else Path(path)
    return Path(database)


def _last(value: str | tuple[str, ...]) -> str:
    """A URL query parameter's value (the last one, when it is given twice)."""
    return value[-1] if isinstance(value, tuple) else value


def file_database_keeps_nothing(db_url: str) -> str | None:
    """Why an embedded database's URL cannot keep an export: it names no file (``sqlite://``,
    ``sqlite:///``, as ``sqlite:///$UNSET_VAR`` becomes; ``duckdb://``) or an in-memory
    database (``:memory:``, a ``file::memory:`` or ``?mode=memory`` URI), which is gone when
    the command ends. None for every other URL, and for one the parser cannot read (the
    engine says what is wrong)."""
    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError):
        return None
    backend = url.get_backend_name()
    if backend not in FILE_DATABASES or database_file(url) is not None:
        return None
    label = FILE_DATABASES[backend]
    what = (
        f"names no {label} file (is a variable in it unset?), which opens a temporary database"
        if not (url.database or "").strip(" /")
        else f"names an in-memory {label} database"
    )
    return (
        f"{what} that keeps nothing once the command ends; give a file, "
        f"e.g. {FILE_DATABASE_EXAMPLES[backend]}"
    )


def _redact_text(url: str) -> str:
    """Masking without a parser, for what SQLAlchemy cannot read (or misreads): everything
    between ``user:`` and the last @ (more than the password, rather than less), and the
    values of credential-like parameters."""
    url = re.sub(r"(://[^:/]*:).*@", r"\1***@", url)
    return re.sub(rf"((?:{_SECRET_WORDS})[^=&]*=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
