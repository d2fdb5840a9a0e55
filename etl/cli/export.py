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
from ..events import json_line, setup_logging
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
    if sum([bool(pairs_path), all_runs, bool(projects)]) != 1:
        raise InputError(
            "say which runs to export: --pairs FILE, --all, or --project ID "
            "(repeatable); exactly one of them"
        )
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
        if log_format == "json":
            _print_dry_run_event(report, projects, skip_finished)
        else:
            _print_dry_run(report, projects, skip_finished)
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
