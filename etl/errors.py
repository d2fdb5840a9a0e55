"""Errors the library raises, each carrying the exit code the CLI documents.

The CLI maps these to messages and exit codes; nothing here knows click.
"""

from typing import Any

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_AUTH_FAILED = 3
EXIT_DATABASE = 4
# An error nsml-etl did not expect: a bug (sysexits' EX_SOFTWARE).
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class EtlError(Exception):
    """Base class: a problem the user can act on, with a documented exit code, and a kind that
    names it in the CLI's JSON error event."""

    exit_code = EXIT_BAD_INPUT
    kind = "input"


class InputError(EtlError):
    """Bad usage or bad input (options, config file, pairs file, credentials)."""

    exit_code = EXIT_BAD_INPUT


class BadLinesError(InputError):
    """Several lines of an input file cannot be used, reported at once: ``lines`` holds the
    first of them (each ``FILE:LINE: what``), ``more`` counts the others, ``headline`` says how
    many in all. One bad line reads as that line alone."""

    def __init__(self, headline: str, lines: list[str], more: int = 0) -> None:
        self.headline, self.lines, self.more = headline, lines, more
        if len(lines) == 1 and not more:
            super().__init__(lines[0])
            return
        tail = [f"... and {more} more"] if more else []
        super().__init__("\n  ".join([f"{headline}:", *lines, *tail]))


class AuthenticationError(EtlError):
    """The gateway refused our credentials (401/403): retrying will not heal it.

    Raised by :func:`nsml_etl.export` once the export has stopped; ``report`` then says what
    happened before (usually nothing: a wrong key fails the first request)."""

    exit_code = EXIT_AUTH_FAILED
    kind = "authentication"
    report: Any = None  # the ExportReport of the export it stopped, when there was one


class DatabaseError(EtlError):
    """The target database is unreachable, refused us, or a write failed."""

    exit_code = EXIT_DATABASE
    kind = "database"
