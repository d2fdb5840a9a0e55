"""``nsml-etl load``: replay a raw archive (or plain run objects) into the table."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from .. import api
from ..api import LOAD_DEFAULTS, LOAD_SETTINGS
from ..config import resolve_settings
from ..events import setup_logging
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
    settings_options,
    show_progress,
)


@click.command(cls=Command)
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
    note_simulated_clock()
    progress = Progress(known_total=False, enabled=show_progress(quiet, log_format))
    freeze_startup_heap()
    with Interrupts(log_format) as interrupts, contextlib.closing(progress):
        report = api.load(file, settings=settings, progress=progress, stop=interrupts.stop)
    print_report(report, log_format)
    sys.exit(report_exit_code(report, interrupts))
