"""``nsml-etl pairs``: list runs through the run list and write them as a pairs file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import api
from ..config import resolve_settings
from ..events import json_line, setup_logging
from ._common import Command, handle_errors, output_options, settings_options


@click.command(cls=Command, name="pairs")
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
    api.RUN_LIST_SETTINGS,
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
    setup_logging(verbose, quiet, log_format)
    settings = resolve_settings(flags, config_file)
    count = api.write_run_list(out_path, projects=projects or None, settings=settings)
    where = "<stdout>" if str(out_path) == "-" else str(out_path)
    if log_format == "json":
        click.echo(
            json_line(
                "info", "pairs_written", f"Wrote {count} pairs to {where}.", pairs=count, path=where
            ),
            err=True,
        )
    else:
        click.echo(f"Wrote {count} pairs to {where}.", err=True)
