"""``nsml-etl export``: fetch the pairs (a file, or discovered) and upsert them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from .. import api
from ..config import SETTINGS_BY_NAME, resolve_settings
from ..errors import EXIT_OK, AuthenticationError, InputError, error_exit_code
from ..events import setup_logging
from ..outcome import ExportReport
from ._common import (
    Command,
    Interrupts,
    Progress,
    freeze_startup_heap,
    handle_errors,
    note_simulated_clock,
    output_options,
    print_report,
    report_exit_code,
    say_error,
    say_library_error,
    settings_options,
    show_progress,
)

# export takes every setting as a flag.
_EXPORT_SETTINGS = tuple(SETTINGS_BY_NAME)


@click.command(cls=Command)
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
    note_simulated_clock()
    progress = Progress(known_total=bool(pairs_path), enabled=show_progress(quiet, log_format))
    freeze_startup_heap()
    with Interrupts(log_format) as interrupts, contextlib.closing(progress):
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
        click.echo(report.dry_run_event() if log_format == "json" else report.dry_run_text())
        sys.exit(interrupts.exit_code or EXIT_OK)
    exit_code = report_exit_code(report, interrupts)
    if report.source_error is not None:
        say_library_error(report.source_error, log_format, exit_code)
    if report.quota_error is not None:
        say_library_error(report.quota_error, log_format, exit_code)
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
