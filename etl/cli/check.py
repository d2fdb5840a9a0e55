"""``nsml-etl check``: the database, the credentials, the API key and the clock."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..config import resolve_settings
from ._common import Command, handle_errors, settings_options


@click.command(cls=Command)
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
