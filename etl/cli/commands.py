"""The ``nsml-etl`` command: click commands over the library (``export`` and ``load`` call
``nsml_etl.export``/``load``; ``report``, ``views`` and ``gpu-servers`` open a
:class:`~nsml_etl.warehouse.Warehouse` and still do some of their own work with it here, and
``pairs`` its own client work, which the structure issue moves into the library).

Exit codes: 0 all exported, 1 some pairs failed (the rest landed), 2 usage or bad input,
3 authentication failed, 4 database error, 70 an unexpected error (a bug), 74 the
--save-raw archive could not be written, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__, api
from ..api import LOAD_DEFAULTS, LOAD_SETTINGS
from ..config import (
    MAX_SECONDS,
    SETTINGS,
    SETTINGS_BY_NAME,
    Setting,
    Settings,
    credentials_from_env,
    flag_message,
    resolve_settings,
)
from ..errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DATABASE,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    AuthenticationError,
    BadLinesError,
    EtlError,
    InputError,
    error_exit_code,
    message_line,
)
from ..events import json_line, setup_logging
from ..files import writing
from ..metrics import Interrupt
from ..outcome import INTERRUPTED, ExportReport
from ..pairs import write_pairs, write_pairs_file

if TYPE_CHECKING:
    from ..warehouse import Warehouse

log = logging.getLogger("nsml_etl")
# Width of the progress bar on a terminal that reports 0 columns (the classic terminal's).
FALLBACK_COLUMNS = 80

# The descriptor of standard output.
STDOUT_FD = 1

# export takes every setting as a flag.
_EXPORT_SETTINGS = tuple(SETTINGS_BY_NAME)


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


def _say_library_error(exc: EtlError, log_format: str, exit_code: int) -> None:
    message, fields = flag_message(exc), {}
    if isinstance(exc, BadLinesError) and log_format == "json":
        # The lines as a list, for a shipper; the message says how many (or is the one line).
        fields = {"lines": exc.lines, "more": exc.more}
        if len(exc.lines) > 1 or exc.more:
            message = exc.headline
    say_error(message, exc.kind, exit_code, log_format, **fields)


class _JsonClickError(click.ClickException):
    """click's own error (a bad option value, a missing option, a file it cannot open) of a
    command line that asks for --log-format json: shown as one ``error`` event."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code  # type: ignore[misc]  # click's is a class default
        self.kind = "usage" if isinstance(error, click.UsageError) else "input"

    def show(self, file: Any = None) -> None:
        say_error(self.message, self.kind, self.exit_code, "json")


def _asks_for_json(args: list[str]) -> bool:
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


class _Command(click.Command):
    """A command whose usage errors follow its --log-format (click prints them as text before
    the command's code runs, so handle_errors cannot)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        json_lines = any(param.name == "log_format" for param in self.params) and _asks_for_json(
            list(args)
        )
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            if not json_lines:
                raise
            raise _JsonClickError(exc) from None


class _Group(click.Group):
    command_class = _Command


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
            _say_library_error(exc, log_format, exc.exit_code)
            sys.exit(exc.exit_code)
        except click.exceptions.ClickException as exc:
            if log_format == "json":
                raise _JsonClickError(exc) from None
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C where no _Interrupts handles it (pairs, startup)
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


class _Interrupts:
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
            _notice(json_line("warning", "signal", message, signal=name, again=again))
        else:
            _notice(message if again else "\n" + message)  # off the progress bar's line

    def __enter__(self) -> _Interrupts:
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


def _exit_code(report: ExportReport, interrupts: _Interrupts) -> int:
    """The report's exit code (its outcome's, as recorded in its batch row); for an
    interrupted one, that of the signal that stopped it."""
    if report.outcome.status == INTERRUPTED and interrupts.exit_code is not None:
        return interrupts.exit_code
    return report.exit_code


def _notice(message: str) -> None:
    """One line on stderr, from a signal handler (see _Interrupts)."""
    data = (message + "\n").encode("utf-8", "replace")
    try:
        os.write(sys.stderr.fileno(), data)
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. click's test runner)
        with contextlib.suppress(Exception):
            click.echo(message, err=True)


def _terminal_columns(stream: Any) -> int:
    """The width of the terminal ``stream`` is on; 0 when it reports none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class _Progress:
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
            width = _terminal_columns(sys.stderr)
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsml-etl")
def main() -> None:
    """Export CLOVA NSML runs into a SQL table.

    Exit codes: 0 all exported; 1 some pairs failed (the rest landed) or the API quota is
    spent; 2 usage or bad input; 3 authentication failed; 4 database error; 70 unexpected
    error (a bug); 74 the --save-raw archive could not be written; 130/143 interrupted; 141
    the reader of stdout quit early, or stdout is closed.
    """
    _keep_stderr_usable()
    _attach_closed_stdout()


def _keep_stderr_usable() -> None:
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


def _attach_closed_stdout() -> None:
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


@main.command()
@click.option(
    "--pairs",
    "pairs_path",
    default=None,
    metavar="PATH",
    help="CSV (project_id,run_name header) or JSON Lines file of pairs; - for stdin.",
)
@click.option(
    "--all",
    "all_runs",
    is_flag=True,
    help="Discover every run the key can see through the run list, and export them.",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="ID",
    help="Discover and export the runs of this project (repeatable).",
)
@click.option(
    "--skip-finished",
    is_flag=True,
    help="Do not fetch runs already stored with a terminal status "
    "(completed, failed, stopped, canceled).",
)
@click.option(
    "--save-raw",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every API response, as received, to this JSON Lines file "
    "(.gz compresses); replay it later with 'nsml-etl load'.",
)
@click.option(
    "--failures-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the pairs that failed to this CSV, in the pairs format, so they can "
    "be retried with --pairs.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check settings, the pairs and the database, and that the credentials are "
    "set; print what would be fetched, and stop: no API request, nothing written "
    "('nsml-etl check' tries the credentials).",
)
@settings_options(_EXPORT_SETTINGS)
@output_options
@handle_errors
def export(
    pairs_path: str | None,
    all_runs: bool,
    projects: tuple[str, ...],
    skip_finished: bool,
    save_raw: Path | None,
    failures_out: Path | None,
    dry_run: bool,
    config_file: Path | None,
    verbose: bool,
    quiet: bool,
    log_format: str,
    **flags: Any,
) -> None:
    """Fetch each (projectId, runName) pair and upsert it into the table.

    Credentials come from NCP_ACCESS_KEY and NCP_SECRET_KEY (and NCP_APIGW_API_KEY when the
    gateway asks for an API key), never from flags or files.
    """
    setup_logging(verbose, quiet, log_format)
    settings = resolve_settings(flags, config_file)
    _note_simulated_clock()
    if sum([bool(pairs_path), all_runs, bool(projects)]) != 1:
        raise InputError(
            "say which runs to export: --pairs FILE, --all, or --project ID "
            "(repeatable); exactly one of them"
        )
    progress = _Progress(known_total=bool(pairs_path), enabled=_show_progress(quiet, log_format))
    _freeze_startup_heap()
    with _Interrupts(log_format) as interrupts, contextlib.closing(progress):
        try:
            report = api.export(
                pairs_path or None,
                all_runs=all_runs,
                projects=projects or None,
                skip_finished=skip_finished,
                settings=settings,
                save_raw=save_raw,
                dry_run=dry_run,
                progress=progress,
                stop=interrupts.stop,
                cancel=interrupts.cancel,
            )
        except AuthenticationError as exc:
            if exc.report is None:
                raise
            report = exc.report
        except Exception as exc:
            # An export that stopped (archive unwritable: 74; database error: 4; a bug: 70)
            # still writes the pairs that failed before, or a stale --failures-out would be
            # left behind.
            stopped = getattr(exc, "report", None)
            if isinstance(stopped, ExportReport):
                _write_failures_out(stopped, failures_out, error_exit_code(exc), log_format)
            raise
    if report.dry_run:
        if log_format == "json":
            _print_dry_run_event(report, projects, skip_finished)
        else:
            _print_dry_run(report, projects, skip_finished)
        sys.exit(interrupts.exit_code or EXIT_OK)
    exit_code = _exit_code(report, interrupts)
    if report.source_error is not None:
        _say_library_error(report.source_error, log_format, exit_code)
    if report.quota_error is not None:
        _say_library_error(report.quota_error, log_format, exit_code)
    # First: a stdout that is gone (exit 141) must not skip it.
    _write_failures_out(report, failures_out, exit_code, log_format)
    if report.auth_error is not None:
        say_error(
            f"{report.auth_error}; stopped, nothing more was written",
            report.auth_error.kind,
            exit_code,
            log_format,
        )
    if skip_finished and not quiet and log_format == "text":  # json: batch_finished's skipped
        click.echo(f"Skipped {report.skipped} runs already stored as finished.")
    print_report(report, log_format)
    sys.exit(exit_code)


def _write_failures_out(
    report: ExportReport, failures_out: Path | None, exit_code: int, log_format: str
) -> None:
    """``--failures-out``, from whatever report the export left; a file it cannot write is
    said, and the export's exit code stays."""
    if failures_out is None:
        return
    try:
        report.write_failures(failures_out)
    except InputError as exc:
        say_error(f"--failures-out {exc}", exc.kind, exit_code, log_format)


def _note_simulated_clock() -> None:
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


def _freeze_startup_heap(preload: bool = True) -> None:
    """Keep the garbage collector off what startup built (modules, SQLAlchemy, pandas, the
    simulator's dataset): it lives as long as the process, yet every full collection rescans
    it, stalling all threads for 70-170 ms in the middle of an export, and once more at exit.
    The modules an export or load needs are imported first (``preload``), so that they are
    frozen too. The CLI owns its process; the library never does this to its host's heap."""
    if preload:
        from .. import pipeline  # noqa: F401 - imported now to be frozen with the rest
    gc.freeze()


def _show_progress(quiet: bool, log_format: str) -> bool:
    return sys.stderr.isatty() and not quiet and log_format == "text"


def _print_dry_run(report: ExportReport, projects: tuple[str, ...], skip_finished: bool) -> None:
    settings = report.settings
    assert settings is not None  # the API sets it
    if report.mode != "pairs":
        which = f"of projects {', '.join(projects)}" if projects else "the key can see"
        click.echo(
            f"Dry run: would discover the runs {which} through GET /projects/runs "
            f"at {settings.base_url}, and fetch each"
        )
    else:
        click.echo(f"Dry run: would fetch {report.requested} runs from {settings.base_url}")
    click.echo(f"  into table {settings.table} of {settings.public_dict()['db_url']} (reachable)")
    click.echo(
        f"  concurrency {settings.concurrency}, timeout {settings.timeout}s, "
        f"max attempts {settings.max_attempts}, chunks of {settings.chunk_size}"
    )
    for pair in report.preview:  # the first pairs, as many as the library keeps
        click.echo(f"  {pair.project_id}\t{pair.run_name}")
    if report.requested > len(report.preview):
        click.echo(f"  ... and {report.requested - len(report.preview)} more")
    if skip_finished:
        click.echo(f"  skipping {report.skipped} runs already stored as finished")
    click.echo("No request sent, nothing written.")


def _print_dry_run_event(
    report: ExportReport, projects: tuple[str, ...], skip_finished: bool
) -> None:
    """--dry-run with --log-format json: the plan as one ``dry_run`` event on stdout."""
    settings = report.settings
    assert settings is not None  # the API sets it
    if report.mode != "pairs":
        message = "Dry run: would discover the runs through GET /projects/runs, and fetch each"
    else:
        message = f"Dry run: would fetch {report.requested} runs"
    click.echo(
        json_line(
            "info",
            "dry_run",
            message + "; no request sent, nothing written",
            mode=report.mode,
            requested=report.requested if report.mode == "pairs" else None,
            projects=list(projects) or None,
            preview=[
                {"project_id": pair.project_id, "run_name": pair.run_name}
                for pair in report.preview
            ],
            more=max(report.requested - len(report.preview), 0),
            skipped=report.skipped if skip_finished else None,
            **settings.public_dict(),
        )
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@settings_options(LOAD_SETTINGS, LOAD_DEFAULTS)
@output_options(verbose="Log each chunk committed and each column added (debug level).")
@handle_errors
def load(
    file: Path, config_file: Path | None, verbose: bool, quiet: bool, log_format: str, **flags: Any
) -> None:
    """Load a raw archive (from export --save-raw) or plain run objects, one JSON per line.

    Runs the same transform and upsert as export, into the same table and column mapping,
    without calling the API. FILE may be gzip-compressed, and - reads standard input.
    """
    setup_logging(verbose, quiet, log_format)
    settings = resolve_settings(flags, config_file, defaults=LOAD_DEFAULTS)
    _note_simulated_clock()
    progress = _Progress(known_total=False, enabled=_show_progress(quiet, log_format))
    _freeze_startup_heap()
    with _Interrupts(log_format) as interrupts, contextlib.closing(progress):
        report = api.load(file, settings=settings, progress=progress, stop=interrupts.stop)
    print_report(report, log_format)
    sys.exit(_exit_code(report, interrupts))


@main.command("pairs")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pairs CSV to write (- for stdout); usable as export --pairs.",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="ID",
    help="Only runs of this project (repeatable); default: every run the key sees.",
)
@settings_options(
    (
        "base_url",
        "timeout",
        "max_attempts",
        "list_timezone",
        "ca_bundle",
        "backoff_initial",
        "backoff_max",
        "retry_after_max",
        "rate_limit",
    ),
    helps={
        "max_attempts": "Attempts per page of the run list before the listing stops with an error."
    },
)
@output_options(verbose="Log each request (debug level); never a secret.")
@handle_errors
def pairs_command(
    out_path: Path,
    projects: tuple[str, ...],
    config_file: Path | None,
    verbose: bool,
    quiet: bool,
    log_format: str,
    **flags: Any,
) -> None:
    """List runs through the run list API and write them as a pairs file.

    Besides project_id and run_name, the file carries status, create_time and update_time
    (UTC), which export --pairs ignores.
    """
    from ..nsml.client import NsmlClient
    from ..nsml.discovery import discover_runs

    setup_logging(verbose, quiet, log_format)
    settings = resolve_settings(flags, config_file)
    client = NsmlClient(settings, credentials_from_env())
    try:
        runs = discover_runs(client, projects=projects or None, timezone=settings.list_timezone)
        rows = (
            (
                *run.pair,
                run.status,
                *(t and t.isoformat(sep=" ") for t in (run.create_time, run.update_time)),
            )
            for run in runs
        )
        columns = ["status", "create_time", "update_time"]
        if str(out_path) == "-":  # as the runs come: there is no file to write aside
            where, count = "<stdout>", write_pairs(sys.stdout, rows, columns)
            sys.stdout.flush()  # here, where a closed or broken stdout is exit 141
        else:
            where, count = str(out_path), write_pairs_file(out_path, rows, columns)
    finally:
        client.close()
    if log_format == "json":
        click.echo(
            json_line(
                "info", "pairs_written", f"Wrote {count} pairs to {where}.", pairs=count, path=where
            ),
            err=True,
        )
    else:
        click.echo(f"Wrote {count} pairs to {where}.", err=True)


@main.command()
@settings_options(("db_url", "table"))
@handle_errors
def views(config_file: Path | None, **flags: Any) -> None:
    """Create or replace the reporting views (one per file in sql/) in the database."""
    from ..reporting.views import create_views
    from ..warehouse import WRITE, Warehouse

    settings = resolve_settings(flags, config_file)
    # require_table: never a new, empty database
    with Warehouse.open(settings, WRITE, require_table=True) as warehouse:
        created = create_views(warehouse)
    for view in created:
        click.echo(f"{view.name}: {view.question}")
    click.echo(f"Created {len(created)} views.", err=True)


@main.command()
@settings_options(("db_url", "table", "base_url", "timeout", "ca_bundle"))
@handle_errors
def check(config_file: Path | None, **flags: Any) -> None:
    """Check what --dry-run cannot: the database, the credentials, the API key and the clock.

    Sends one signed request (the project list) and prints one line per check: OK, or FAIL
    and what to do. Creates and writes nothing (not even a missing SQLite file). Exit codes as
    for export: 0 all OK; 1 the API could not be reached; 2 missing credentials or bad
    settings; 3 the gateway refused the credentials, API key or clock; 4 database error.
    """
    from ..check import run_checks

    settings = resolve_settings(flags, config_file)
    report = run_checks(settings)
    for line in report.lines:
        click.echo(str(line))
    sys.exit(report.exit_code)


@main.group("gpu-servers")
def gpu_servers() -> None:
    """GPUs per GPU server (nsml_gpu_servers), for GPU-hours in the reports.

    nsml-etl never guesses a count: servers without one show run-hours only, and are listed
    by 'gpu-servers list' and the nsml_gpu_servers_without_count view.
    """


@contextlib.contextmanager
def _gpu_warehouse(
    flags: dict[str, Any], config_file: Path | None, writes: bool = True
) -> Iterator[tuple[Warehouse, Settings]]:
    """(warehouse, settings) for one gpu-servers command: the database alone (no runs table
    is checked), opened to write or, for a command that does not ``writes``, to read."""
    from ..warehouse import READ, WRITE, Warehouse

    settings = resolve_settings(flags, config_file)
    with Warehouse.open(settings.db_url, WRITE if writes else READ) as warehouse:
        yield warehouse, settings


@gpu_servers.command("set")
@click.argument("code", type=click.IntRange(min=0))
@click.argument("gpus", type=click.IntRange(min=0))
@click.option("--label", default=None, help="What the server is, for people (e.g. 'A100 x2').")
@settings_options(("db_url",))
@handle_errors
def gpu_servers_set(
    code: int, gpus: int, label: str | None, config_file: Path | None, **flags: Any
) -> None:
    """Record that GPU server CODE (a run's gpuSvrCode) has GPUS GPUs."""
    from ..warehouse.gpuservers import GpuServer, check_server

    check_server(code, gpus, "gpu-servers set")
    with _gpu_warehouse(flags, config_file) as (warehouse, _):
        warehouse.set_gpu_servers([GpuServer(code, gpus, label)])
    click.echo(f"GPU server {code}: {gpus} GPU{'' if gpus == 1 else 's'}.", err=True)


@gpu_servers.command("unset")
@click.argument("codes", nargs=-1, required=True, type=click.IntRange(min=0))
@settings_options(("db_url",))
@handle_errors
def gpu_servers_unset(codes: tuple[int, ...], config_file: Path | None, **flags: Any) -> None:
    """Forget the GPU counts of these servers (their GPU-hours become unknown)."""
    with _gpu_warehouse(flags, config_file) as (warehouse, _):
        removed = warehouse.unset_gpu_servers(codes)
    click.echo(f"Removed {removed} of {len(set(codes))} servers.", err=True)


@gpu_servers.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(("db_url",))
@handle_errors
def gpu_servers_load(file: Path, config_file: Path | None, **flags: Any) -> None:
    """Set the GPU counts of a TOML file ([servers] with CODE = GPUS or
    CODE = { gpus = N, label = "..." }), all of them or, on any error, none."""
    from ..warehouse.gpuservers import read_toml

    servers = read_toml(file)  # checked whole before the database is touched
    with _gpu_warehouse(flags, config_file) as (warehouse, _):
        count = warehouse.set_gpu_servers(servers)
    click.echo(f"Set {count} GPU servers from {file}.", err=True)


@gpu_servers.command("list")
@settings_options(("db_url", "table"))
@handle_errors
def gpu_servers_list(config_file: Path | None, **flags: Any) -> None:
    """Print the known GPU counts, then the servers that --table has runs on without one."""
    # It reads: a mistyped path must not become a file.
    with _gpu_warehouse(flags, config_file, writes=False) as (warehouse, settings):
        known, missing = warehouse.list_gpu_servers(settings.table)
    writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    writer.writerow(["gpu_svr_code", "gpus", "label"])
    writer.writerows((s.gpu_svr_code, s.gpus, s.label or "") for s in known)
    if missing:
        click.echo(
            f"\nServers with runs in {settings.table} but no GPU count "
            "(set them with 'nsml-etl gpu-servers set CODE GPUS'):"
        )
        writer.writerow(["gpu_svr_code", "eng_full_name", "runs"])
        writer.writerows((code, name or "", runs) for code, name, runs in missing)


@main.command()
@settings_options(("db_url", "table"))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "csv", "json"]),
    default=None,
    help="Output on stdout: text (the default, unless --html or --out-dir), json, or "
    "csv (one section: needs --view NAME, or --out-dir DIR).",
)
@click.option(
    "--view",
    "views",
    metavar="NAME",
    multiple=True,
    help="Only this section, by its name (nsml_gpu_usage, runs_by_project, ...; "
    "the JSON report's keys); repeat it for several, shown in the report's order.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Write one CSV file per section, NAME.csv, into DIR.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Rows per table, in every format (default: 20 or 10 per list, 15 per "
    "failure rate, every week, and every row in CSV; 0: all). A table cut short says so "
    "(20 of 54).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the whole report as one self-contained HTML page with charts "
    "(works offline); then only one line says where, unless --format is given.",
)
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    metavar="DATE",
    help="First day of the analytics sections (from its week's Monday; default: "
    "the Monday 7 weeks before --until's week).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    metavar="DATE",
    help="Last day of the analytics sections (default: today, UTC).",
)
@handle_errors
def report(
    config_file: Path | None,
    output_format: str | None,
    views: tuple[str, ...],
    out_dir: Path | None,
    limit: int | None,
    html_path: Path | None,
    since: datetime | None,
    until: datetime | None,
    **flags: Any,
) -> None:
    """Print a summary from the reporting views (created if missing): runs by project, active
    runs, GPU servers, images, creators, env keys, exports, and run-hours, GPU-hours, queue
    waits and failure rates over a period of weeks."""
    from ..clock import utc_now
    from ..reporting.analytics import period_for, report_sections
    from ..reporting.formats import (
        as_csv,
        as_json,
        as_text,
        csv_limit,
        limit_note,
        write_csv_files,
    )
    from ..reporting.html import as_html
    from ..reporting.report import (
        SECTION_NAMES,
        section_name,
        views_for_reading,
    )
    from ..warehouse import READ, Warehouse

    if out_dir is not None and output_format not in (None, "csv"):
        raise click.UsageError(f"--out-dir writes CSV files; drop --format {output_format}")
    if output_format == "csv" and len(views) != 1 and out_dir is None:
        # Sections have different columns: one CSV stream could hold only one of them.
        raise click.UsageError(
            "--format csv prints one section: add --view NAME (one of "
            f"{', '.join(SECTION_NAMES)}), or --out-dir DIR for a CSV "
            "file per section"
        )
    settings = resolve_settings(flags, config_file)
    wanted = {section_name(view, settings.table) for view in views}
    period = period_for(
        since.date() if since else None, until.date() if until else None, utc_now().date()
    )
    # require_table: never a new, empty database
    with Warehouse.open(settings, READ, require_table=True) as warehouse:
        views_for_reading(warehouse)  # current, or read as they are if read-only
        writes_csv = out_dir is not None or output_format == "csv"
        rows = csv_limit(limit) if writes_csv else limit  # CSV: every row unless --limit
        tables = report_sections(warehouse.engine, settings.table, period, rows, utc_now())
        page = tables
        if html_path is not None and rows != limit:  # the page keeps its lists short
            page = report_sections(warehouse.engine, settings.table, period, limit, utc_now())
        source = f"table {settings.table} in {warehouse.description}"
    shown = [t for t in tables if not wanted or t.name in wanted]
    if out_dir is not None:
        paths = write_csv_files(shown, out_dir)
        click.echo(
            f"Wrote {len(paths)} CSV file{'s' if len(paths) != 1 else ''} to {out_dir}.", err=True
        )
    elif output_format == "csv":
        click.echo(as_csv(shown[0]), nl=False)
    elif output_format is not None or html_path is None:
        render = {"text": as_text, "json": as_json}
        click.echo(render[output_format or "text"](shown))
    if out_dir is not None or output_format == "csv":  # CSV has no room for the note
        for table in shown:
            if (note := limit_note(table)) is not None:
                click.echo(f"Note: {table.name}: {note}", err=True)
    if html_path is not None:
        with writing(html_path, "--html") as handle:  # whole, or a FIFO or device in place
            handle.write(as_html(page, source=source, now=utc_now()))
        click.echo(f"Wrote the HTML report to {html_path.resolve()}.", err=True)


def _write_address(path: Path, base_url: str) -> None:
    """The simulator's base URL in ``path``, for scripts; readers never see half of it."""
    with writing(path, "--address-file") as handle:
        handle.write(base_url + "\n")


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    type=click.IntRange(0, 65535),
    show_default=True,
    help="Port; 0 picks a free one.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the generated dataset.")
@click.option(
    "--projects",
    default=2,
    type=click.IntRange(min=0),
    show_default=True,
    help="Projects in the dataset.",
)
@click.option(
    "--runs",
    "runs_per_project",
    default=10,
    type=click.IntRange(min=0),
    show_default=True,
    help="Runs per project.",
)
@click.option(
    "--fault-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    show_default=True,
    help="Share of requests answered with an injected fault.",
)
@click.option(
    "--faults",
    default=None,
    metavar="KIND,...",
    help="Fault kinds to inject (default: all but 429-quota): 429 (errorCode 410, with "
    "Retry-After), "
    "429-no-retry-after (errorCode 420), 429-no-code (an HTML 429), 429-quota (one stray "
    "quota answer), 500, 502-html, 503, 504, drop, truncate, slow, trickle.",
)
@click.option(
    "--fault-streak",
    default=None,
    type=click.IntRange(min=1),
    help="At most this many faults in a row for one path.",
)
@click.option(
    "--latency",
    default=0.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Seconds added to every response.",
)
@click.option(
    "--slow-seconds",
    default=2.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Delay of a 'slow' fault.",
)
@click.option(
    "--trickle-seconds",
    default=1.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Seconds between the body bytes of a 'trickle' fault (headers come at once).",
)
@click.option(
    "--retry-after",
    default=1,
    type=click.IntRange(0, MAX_SECONDS),
    show_default=True,
    help="Retry-After seconds sent with 429s.",
)
@click.option(
    "--quota",
    default=None,
    type=click.IntRange(min=0),
    metavar="N",
    help="Spend the usage plan's day or month quota after N requests: every request "
    "after them is answered 429 errorCode 400 (Quota Exceeded) until the simulator restarts.",
)
@click.option(
    "--gateway-clock-offset",
    default=0.0,
    type=click.FloatRange(-MAX_SECONDS, MAX_SECONDS),
    show_default=True,
    metavar="SECONDS",
    help="Run the gateway's own clock (its signature window and Date header) this "
    "far ahead of this machine's (negative: behind), to try 'nsml-etl check'.",
)
@click.option(
    "--broken-node-lists",
    default=0.0,
    type=click.FloatRange(0.0, 1.0),
    show_default=True,
    metavar="SHARE",
    help="Share of runs whose node list answers 500 every time (drawn per run from the "
    "seed), to see export --nodes fail a run's node list alone.",
)
@click.option(
    "--address-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the base URL here once listening.",
)
@click.option(
    "--write-pairs",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the dataset's pairs as a CSV pairs file.",
)
@click.option(
    "--epoch",
    default=None,
    metavar="TIME",
    help="Let time pass: runs are created from this moment on (ISO 8601, UTC unless "
    "it says; default 2026-01-05T00:00:00Z once --clock or --clock-file is given) "
    "and change status as the simulated clock moves.",
)
@click.option(
    "--clock",
    "clock_at",
    default=None,
    metavar="TIME",
    help="The simulated moment to serve (default: the epoch).",
)
@click.option(
    "--clock-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the simulated moment from this file whenever it changes, so a script "
    "can move the clock between exports (write it to a temporary file and rename).",
)
@handle_errors
def simulate(
    host: str,
    port: int,
    seed: int,
    projects: int,
    runs_per_project: int,
    fault_rate: float,
    faults: str | None,
    fault_streak: int | None,
    latency: float,
    slow_seconds: float,
    trickle_seconds: float,
    retry_after: int,
    quota: int | None,
    gateway_clock_offset: float,
    broken_node_lists: float,
    address_file: Path | None,
    write_pairs: Path | None,
    epoch: str | None,
    clock_at: str | None,
    clock_file: Path | None,
) -> None:
    """Serve a local NSML API (signature-checked, deterministic data, optional faults).

    It accepts the keys in NCP_ACCESS_KEY / NCP_SECRET_KEY (and NCP_APIGW_API_KEY if set).
    Data is frozen unless --epoch, --clock or --clock-file lets time pass; exports then record
    the simulated moment when NSML_ETL_CLOCK holds it too.
    """
    from ..clock import parse_moment
    from ..testing.simulator import (
        DEFAULT_EPOCH,
        DEFAULT_FAULT_KINDS,
        FAULT_KINDS,
        Simulator,
        SimulatorConfig,
    )

    credentials = credentials_from_env()
    kinds = tuple(k.strip() for k in faults.split(",")) if faults else DEFAULT_FAULT_KINDS
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise click.BadParameter(
            f"unknown fault kind(s): {', '.join(unknown)}", param_hint="--faults"
        )
    config = SimulatorConfig(
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        api_key=credentials.api_key,
        seed=seed,
        projects=projects,
        runs_per_project=runs_per_project,
        fault_rate=fault_rate,
        fault_kinds=kinds,
        fault_streak=fault_streak,
        latency=latency,
        slow_seconds=slow_seconds,
        trickle_seconds=trickle_seconds,
        retry_after=retry_after,
        quota=quota,
        clock_offset=gateway_clock_offset,
        broken_node_lists=broken_node_lists,
    )
    if epoch or clock_at or clock_file:
        config.epoch = parse_moment(epoch, "--epoch") if epoch else DEFAULT_EPOCH
        config.clock = parse_moment(clock_at, "--clock") if clock_at else None
        config.clock_file = clock_file
    try:
        sim = Simulator(config, host=host, port=port)
    except OSError as exc:  # a busy port, an address not ours, a name that does not resolve
        hint = (
            "choose another --port (0 picks a free one)"
            if exc.errno == errno.EADDRINUSE
            else "check --host and --port"
        )
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    try:
        if write_pairs:
            write_pairs_file(write_pairs, sim.pairs())
        if address_file:
            _write_address(address_file, sim.base_url)
    except BaseException:
        sim.close()  # it never served: let the port go
        raise
    when = f" (simulated clock {sim.clock.isoformat(sep=' ')} UTC)" if sim.clock else ""
    click.echo(f"NSML simulator serving {len(sim.pairs())} runs at {sim.base_url}{when}", err=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    _freeze_startup_heap(preload=False)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
