"""Every exception class of nsml-etl, and the exit codes the CLI documents.

:class:`EtlError` and its subclasses are what the library raises on purpose, each carrying its
exit code; the CLI maps them to messages and exit codes (nothing here knows click). The others
are internal signals between modules: one request or pair that failed, a run that cannot be
stored, a mapping that changed under a chunk, an export that is stopping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from .model import Pair

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_AUTH_FAILED = 3
EXIT_DATABASE = 4
# A local file the export writes (the --save-raw archive) failed mid-way: a full disk, a lost
# mount (sysexits' EX_IOERR).
EXIT_OUTPUT = 74
# An error nsml-etl did not expect: a bug (sysexits' EX_SOFTWARE).
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
# stdout was closed before everything was written (`nsml-etl report | head`), as SIGPIPE would.
EXIT_BROKEN_PIPE = 141


class EtlError(Exception):
    """Base class: a problem the user can act on, with a documented exit code, and a kind that
    names it in the CLI's JSON error event."""

    exit_code = EXIT_BAD_INPUT
    kind = "input"
    # A message about one setting's value names the setting as its caller knows it: the Python
    # API by its argument (the message itself, ``db_url=...``), the CLI by its flag
    # (``config.flag_message``). Set by :meth:`about`.
    setting: str | None = None
    detail: str = ""
    # The message in the CLI's words, for one that names the Python API's arguments where the
    # CLI has flags (which runs to export: pairs= or --pairs FILE).
    cli_message: str | None = None
    # The ExportReport of the export or load it stopped, once one had started (what was
    # committed before, the batch id, the metrics); None for an error before the start.
    report: Any = None

    @classmethod
    def about(cls, setting: str, detail: str) -> Self:
        """The error ``detail`` about the value of ``setting`` (a settings field's name)."""
        error = cls(f"{setting}={detail}")
        error.setting, error.detail = setting, detail
        return error


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


class DatabaseError(EtlError):
    """The target database is unreachable, refused us, or a write failed."""

    exit_code = EXIT_DATABASE
    kind = "database"


class OutputError(EtlError):
    """A file nsml-etl writes as it goes (the ``--save-raw`` archive) cannot be written any
    more: a full disk, a lost mount. The export stops; runs fetched before are committed."""

    exit_code = EXIT_OUTPUT
    kind = "output"


class DiscoveryError(EtlError):
    """The run list failed or answered with something we cannot page through. Runs already
    exported stay; the export ends as partly failed."""

    exit_code = EXIT_SOME_FAILED
    kind = "run_list"


class QuotaExhausted(EtlError):
    """The API Gateway's usage plan quota (day or month) is spent: 429 with errorCode 400, to
    two requests in a row. It heals only when the quota resets, so the export stops sending
    requests, keeps what it fetched, and ends as partly failed (``ExportReport.quota_error``)."""

    exit_code = EXIT_SOME_FAILED
    kind = "quota"


# Characters of an unexpected error's message kept (its first line only).
MAX_UNEXPECTED_TEXT = 300


def error_exit_code(exc: BaseException) -> int:
    """The exit code an exception ends a command with: its own for ours, 4 for a database
    error that escaped the library's wrappers, 70 for anything else (a bug)."""
    if isinstance(exc, EtlError):
        return exc.exit_code
    if type(exc).__module__.startswith("sqlalchemy"):
        return EXIT_DATABASE
    return EXIT_INTERNAL


def message_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most MAX_UNEXPECTED_TEXT characters (a
    driver's or a bug's later lines may hold anything)."""
    return (str(exc).strip().splitlines() or [""])[0][:MAX_UNEXPECTED_TEXT]


def error_words(exc: BaseException) -> str:
    """What an exception says, on one line: ours as they are; anything else as its class and
    the first line of its message."""
    if isinstance(exc, EtlError):
        return str(exc)
    words = message_line(exc)
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


# -- internal: raised and caught inside nsml-etl ------------------------------------------


class ApiError(Exception):
    """A response or transport failure for one request."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        error_code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1  # set by NsmlClient.get once the retry policy gives up


class Aborted(Exception):
    """The export is stopping (authentication failed, or a signal); do not start attempts."""


class RunFetchFailed(Exception):
    """A pair that could not be fetched: not found, refused, or out of attempts."""

    def __init__(self, pair: Pair, error: ApiError, attempts: int) -> None:
        super().__init__(f"{pair}: {error.message}")
        self.pair = pair
        self.error = error
        self.attempts = attempts


class RunShapeError(ValueError):
    """A response that is valid JSON but cannot be stored faithfully; the pair fails."""


class MappingChanged(Exception):
    """The column mapping found under a table's lock names a column that does not exist yet:
    the schema step must add it before the chunk is written. ``mapping`` is what was found
    (a retry that finds the same one again has made no progress)."""

    def __init__(self, table: str, mapping: object) -> None:
        super().__init__(table)
        self.mapping = mapping
