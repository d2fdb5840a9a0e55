"""``nsml-etl report``: the reporting views and analytics, as text, CSV, JSON or HTML."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .. import api
from ..config import resolve_settings
from ._common import Command, handle_errors, settings_options


@click.command(cls=Command)
@settings_options(api.REPORT_SETTINGS)
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
    help="First day of the analytics sections, from 00:00 in --timezone (default: "
    "the Monday 7 weeks before --until's week).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    metavar="DATE",
    help="Last day of the analytics sections, to 24:00 in --timezone (default: today there).",
)
@click.option(
    "--period",
    "unit",
    type=click.Choice(["day", "week", "month"]),
    default=None,
    help="Cut run_hours_by_project and run_hours_by_creator into days, weeks (from "
    "Monday) or calendar months in --timezone (default: one row for the whole period).",
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
    unit: str | None,
    **flags: Any,
) -> None:
    """Print a summary from the reporting views (created if missing): runs by project, active
    runs, GPU servers, images, creators, env keys, exports, and run-hours, GPU-hours, queue
    waits and failure rates over a period of days in --timezone."""
    from ..reporting.report import SECTION_NAMES

    if out_dir is not None and output_format not in (None, "csv"):
        raise click.UsageError(f"--out-dir writes CSV files; drop --format {output_format}")
    if output_format == "csv" and len(views) != 1 and out_dir is None:
        # Sections have different columns: one CSV stream could hold only one of them.
        raise click.UsageError(
            "--format csv prints one section: add --view NAME (one of "
            f"{', '.join(SECTION_NAMES)}), or --out-dir DIR for a CSV "
            "file per section"
        )
    read = api.build_report(
        sections=views,
        limit=limit,
        since=since.date() if since else None,
        until=until.date() if until else None,
        unit=unit,
        for_csv=out_dir is not None or output_format == "csv",
        for_html=html_path is not None,
        settings=resolve_settings(flags, config_file),
    )
    if out_dir is not None:
        paths = read.write_csv_files(out_dir)
        click.echo(
            f"Wrote {len(paths)} CSV file{'s' if len(paths) != 1 else ''} to {out_dir}.", err=True
        )
    elif output_format == "csv":
        click.echo(read.as_csv(), nl=False)
    elif output_format == "json":
        click.echo(read.as_json())
    elif output_format is not None or html_path is None:
        click.echo(read.as_text())
    if out_dir is not None or output_format == "csv":  # CSV has no room for the note
        for note in read.limit_notes():
            click.echo(f"Note: {note}", err=True)
    if html_path is not None:
        read.write_html(html_path)
        click.echo(f"Wrote the HTML report to {html_path.resolve()}.", err=True)
