"""What every command shares: the option factories, the error handling that turns every
exception into a message and a documented exit code, the signal handling of export and load,
the progress bar, and the care of closed standard streams."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from ..config import SETTINGS, Setting, flag_message
from ..errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DATABASE,
    EXIT_INTERNAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    BadLinesError,
    EtlError,
    error_exit_code,
    message_line,
)
from ..events import json_line
from ..metrics import Interrupt
from ..outcome import INTERRUPTED, ExportReport

log = logging.getLogger("nsml_etl")
# Width of the progress bar on a terminal that reports 0 columns (the classic terminal's).
FALLBACK_COLUMNS = 80

# The descriptor of standard output.
STDOUT_FD = 1


class SettingType(click.ParamType):  # type: ignore[type-arg]  # generic in click's stubs only
    """A flag checked by its setting's own parser (the one env and file values go through), so
    a bad value is click's usage error without the rules being written twice."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.name = setting.metavar.lower()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.setting.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def settings_options(
    names: tuple[str, ...],
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> Callable[..., Any]:
    """Decorator adding one option per setting, plus --config; defaults stay None so the
    config layering (defaults < file < env < flags) can tell what was given. ``defaults``
    overrides a setting's default for this command (pass the same to resolve_settings), and
    ``helps`` its help text, where the setting means something else for this command."""
    defaults = defaults or {}
    helps = helps or {}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for setting in reversed([s for s in SETTINGS if s.name in names]):
            default = defaults.get(setting.name, setting.default)
            if setting.is_flag:  # given means yes; None lets env and file decide
                func = click.option(
                    setting.flag,
                    setting.name,
                    is_flag=True,
                    flag_value=True,
                    default=None,
                    help=f"{helps.get(setting.name, setting.help)} [env {setting.env}]",
                )(func)
                continue
            func = click.option(
                setting.flag,
                setting.name,
                type=SettingType(setting),
                metavar=setting.metavar,
                default=None,
                help=f"{helps.get(setting.name, setting.help)} [env {setting.env}; "
                f"default {default}]",
            )(func)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="TOML file with settings (keys as the option names, e.g. concurrency = 16). "
            "Flags beat env vars, env vars beat the file. Secrets are refused there.",
        )(func)

    return decorate


def output_options(
    func: Callable[..., Any] | None = None,
    *,
    verbose: str = "Log each request and chunk (debug level); never a secret.",
) -> Callable[..., Any]:
    """Decorator adding -v, -q and --log-format; ``verbose`` is the -v help of a command that
    logs other things than export does (``@output_options(verbose=...)``)."""
    if func is None:
        return functools.partial(output_options, verbose=verbose)
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: for log shippers, every line on stderr is one JSON "
        "object, an event (errors too; the README lists them), and no text "
        "goes to stdout either.",
    )(func)
    func = click.option(
        "-q", "--quiet", is_flag=True, help="Print only errors and the final summary."
    )(func)
    return click.option("-v", "--verbose", is_flag=True, help=verbose)(func)


def say_error(
    message: str, kind: str, exit_code: int, log_format: str = "text", **fields: Any
) -> None:
    """An error on stderr: ``Error: message``, or with --log-format json one ``error`` event
    (``kind`` names it; ``exit_code`` is the one the command exits with)."""
    if log_format == "json":
        line = json_line("error", "error", message, kind=kind, exit_code=exit_code, **fields)
    else:
        line = f"Error: {message}"
    with contextlib.suppress(OSError):  # stderr's reader went away: the exit code still tells
        click.echo(line, err=True)


def say_library_error(exc: EtlError, log_format: str, exit_code: int) -> None:
    message, fields = flag_message(exc), {}
    if isinstance(exc, BadLinesError) and log_format == "json":
        # The lines as a list, for a shipper; the message says how many (or is the one line).
        fields = {"lines": exc.lines, "more": exc.more}
        if len(exc.lines) > 1 or exc.more:
            message = exc.headline
    say_error(message, exc.kind, exit_code, log_format, **fields)


class JsonClickError(click.ClickException):
    """click's own error (a bad option value, a missing option, a file it cannot open) of a
    command line that asks for --log-format json: shown as one ``error`` event."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code  # type: ignore[misc]  # click's is a class default
        self.kind = "usage" if isinstance(error, click.UsageError) else "input"

    def show(self, file: Any = None) -> None:
        say_error(self.message, self.kind, self.exit_code, "json")


def asks_for_json(args: list[str]) -> bool:
    """Whether a command line (not parsed yet, or not parseable) gives --log-format json."""
    value = None
    words = iter(args)
    for word in words:
        if word == "--":
            break
        if word == "--log-format":
            value = next(words, None)
        elif word.startswith("--log-format="):
            value = word.split("=", 1)[1]
    return value == "json"


class Command(click.Command):
    """A command whose usage errors follow its --log-format (click prints them as text before
    the command's code runs, so handle_errors cannot)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        json_lines = any(param.name == "log_format" for param in self.params) and asks_for_json(
            list(args)
        )
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            if not json_lines:
                raise
            raise JsonClickError(exc) from None


class Group(click.Group):
    command_class = Command


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one-line messages (one ``error`` event with --log-format json)
    and documented exit codes; anything else too, so no traceback ever reaches a user (it is
    logged at debug level, shown by -v)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        log_format = kwargs.get("log_format", "text")
        try:
            return func(*args, **kwargs)
        except EtlError as exc:
            say_library_error(exc, log_format, exc.exit_code)
            sys.exit(exc.exit_code)
        except click.exceptions.ClickException as exc:
            if log_format == "json":
                raise JsonClickError(exc) from None
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C where no Interrupts handles it (pairs, startup)
            # Not click's "Aborted!" and exit 1: 1 means failed pairs, and Ctrl-C is 130.
            say_error("interrupted", "interrupted", EXIT_SIGINT, log_format)
            sys.exit(EXIT_SIGINT)
        except BrokenPipeError:
            # The reader of stdout went away (`nsml-etl report | head`): nothing to tell it.
            # stdout goes to /dev/null so that the interpreter's last flush fails no more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:  # a bug, or a database error that escaped the library
            log.debug("unexpected error", exc_info=True)
            words = message_line(exc)
            if error_exit_code(exc) == EXIT_DATABASE:
                say_error(f"database error: {words}", "database", EXIT_DATABASE, log_format)
                sys.exit(EXIT_DATABASE)
            say_error(
                f"unexpected {type(exc).__name__}: {words}; this is a bug in nsml-etl, "
                "please report it (with -v, export, load and pairs log where)",
                "internal",
                EXIT_INTERNAL,
                log_format,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper


class Interrupts:
    """SIGINT/SIGTERM set ``stop``: the pipeline stops fetching, gives requests in flight a
    short grace, and commits what was fetched. A repeated signal (coreutils ``timeout`` signals
    the process and then its process group, so it arrives twice at once; or a second Ctrl-C)
    also sets ``cancel``: requests in flight are cut at once, and what was fetched is still
    committed. The exit code follows the first signal.

    The handler never raises: it runs in the main thread between two bytecodes, possibly in
    the middle of a commit, which an exception there would abort. It writes its notice with one
    unbuffered write(2), since the main thread may be inside a buffered write to stderr."""

    def __init__(self, log_format: str = "text") -> None:
        self.stop = Interrupt()  # knows its exit code, for the metrics file
        self.cancel = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._json = log_format == "json"

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        again = self.stop.is_set()
        if again:
            self.cancel.set()
            message = (
                f"{name} again: cancelling the requests in flight; still committing the "
                "runs in hand"
            )
        else:
            self.signal = signum
            self.stop.exit_code = self._exit_codes[signum]
            self.stop.set()
            message = f"{name}: stopping; committing the runs in hand"
        if self._json:
            notice(json_line("warning", "signal", message, signal=name, again=again))
        else:
            notice(message if again else "\n" + message)  # off the progress bar's line

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.signal is not None:
            return  # keep ours: a late repeat must not turn this clean exit into a kill
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    _exit_codes: dict[int, int] = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}

    @property
    def exit_code(self) -> int | None:
        return self._exit_codes.get(self.signal) if self.signal is not None else None


def report_exit_code(report: ExportReport, interrupts: Interrupts) -> int:
    """The report's exit code (its outcome's, as recorded in its batch row); for an
    interrupted one, that of the signal that stopped it."""
    if report.outcome.status == INTERRUPTED and interrupts.exit_code is not None:
        return interrupts.exit_code
    return report.exit_code


def notice(message: str) -> None:
    """One line on stderr, from a signal handler (see Interrupts)."""
    data = (message + "\n").encode("utf-8", "replace")
    try:
        os.write(sys.stderr.fileno(), data)
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. click's test runner)
        with contextlib.suppress(Exception):
            click.echo(message, err=True)


def terminal_columns(stream: Any) -> int:
    """The width of the terminal ``stream`` is on; 0 when it reports none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Progress:
    """A tqdm bar on a terminal; nothing otherwise (cron gets only the summary). The bar
    appears at the library's first call, which says how many runs are requested when that is
    known beforehand (``known_total``: a pairs file; discovery counts them as it goes)."""

    def __init__(self, known_total: bool, enabled: bool) -> None:
        self.known_total = known_total
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, report: ExportReport) -> None:
        if self.enabled and self.bar is None:
            from tqdm import tqdm

            total = report.requested if self.known_total else None
            # A terminal that reports no width (0 columns: a fresh pty, some CI consoles) gets
            # a fixed one: tqdm would draw nothing in 0 columns.
            width = terminal_columns(sys.stderr)
            self.bar = tqdm(
                total=total,
                unit="run",
                file=sys.stderr,
                dynamic_ncols=width > 0,
                ncols=None if width > 0 else FALLBACK_COLUMNS,
            )
        if self.bar is not None:
            self.bar.n = report.settled
            self.bar.set_postfix(retried=report.retried, failed=len(report.failed), refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_report(report: ExportReport, log_format: str = "text") -> None:
    """The failed pairs and the summary on stdout; nothing with --log-format json, where the
    pair_failed and batch_finished events on stderr say it."""
    if log_format == "json":
        return
    for line in report.failure_lines():
        click.echo(line)
    click.echo(report.summary())


def keep_stderr_usable() -> None:
    """A process started with stderr closed (``2>&-``) has no ``sys.stderr``, and its file
    descriptor 2 is free for the next file opened, the database among them: point both at
    /dev/null, so that logging, errors and the progress bar write nowhere instead of failing
    (or writing into that file). The exit code still says how the command ended."""
    if sys.stderr is not None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.fstat(2)
    except OSError:  # free: hold it
        os.dup2(null, 2)
        os.close(null)
        null = 2
    sys.stderr = open(null, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115


def attach_closed_stdout() -> None:
    """A process started with stdout closed (``>&-``) has no ``sys.stdout``, and click's echo
    then drops every line without a word (``report >&-`` exited 0 having written nothing).
    Give fd 1 a pipe nobody reads instead: the first output is the broken pipe it is, exit 141
    as for a reader that quit. A command that prints nothing on stdout (``export
    --log-format json``) keeps its own exit code."""
    if sys.stdout is not None:
        return
    reader, writer = os.pipe()
    os.close(reader)
    if writer != STDOUT_FD:
        os.dup2(writer, STDOUT_FD)
        os.close(writer)
    sys.stdout = open(STDOUT_FD, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def note_simulated_clock() -> None:
    """Say so when NSML_ETL_CLOCK fixes the time (a bad value stops here, with exit 2)."""
    from ..clock import CLOCK_ENV, clock_override

    moment = clock_override()
    if moment is not None:
        log.warning(
            "%s is set: everything this run writes is dated %s UTC (for the "
            "simulator's clock only)",
            CLOCK_ENV,
            moment.isoformat(sep=" "),
        )


def freeze_startup_heap(preload: bool = True) -> None:
    """Keep the garbage collector off what startup built (modules, SQLAlchemy, pandas, the
    simulator's dataset): it lives as long as the process, yet every full collection rescans
    it, stalling all threads for 70-170 ms in the middle of an export, and once more at exit.
    The modules an export or load needs are imported first (``preload``), so that they are
    frozen too. The CLI owns its process; the library never does this to its host's heap."""
    if preload:
        from .. import pipeline  # noqa: F401 - imported now to be frozen with the rest
    gc.freeze()


def show_progress(quiet: bool, log_format: str) -> bool:
    return sys.stderr.isatty() and not quiet and log_format == "text"
