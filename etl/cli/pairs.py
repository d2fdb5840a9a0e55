"""``nsml-etl pairs``: list runs through the run list and write them as a pairs file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..config import credentials_from_env, resolve_settings
from ..events import json_line, setup_logging
from ..pairs import write_pairs, write_pairs_file
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
