"""Errors the library raises, each carrying the exit code the CLI documents.

The CLI maps these to messages and exit codes; nothing here knows click.
"""

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
    """Base class: a problem the user can act on, with a documented exit code."""

    exit_code = EXIT_BAD_INPUT


class InputError(EtlError):
    """Bad usage or bad input (options, config file, pairs file, credentials)."""

    exit_code = EXIT_BAD_INPUT


class AuthenticationError(EtlError):
    """The gateway refused our credentials (401/403): retrying will not heal it."""

    exit_code = EXIT_AUTH_FAILED


class DatabaseError(EtlError):
    """The target database is unreachable, refused us, or a write failed."""

    exit_code = EXIT_DATABASE
