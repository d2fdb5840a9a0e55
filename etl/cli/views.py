"""``nsml-etl views``: create or replace the reporting views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import api
from ..config import resolve_settings
from ._common import Command, handle_errors, settings_options


@click.command(cls=Command)
@settings_options(
    api.VIEWS_SETTINGS,
    helps={
        "timezone": "Zone of the days of the nsml_run_hours_per_local_day view (kept by "
        "later refreshes, as by report's)."
    },
)
@handle_errors
def views(config_file: Path | None, **flags: Any) -> None:
    """Create or replace the reporting views (one per file in sql/) in the database."""
    created = api.create_views(settings=resolve_settings(flags, config_file))
    for view in created:
        click.echo(f"{view.name}: {view.question}")
    click.echo(f"Created {len(created)} views.", err=True)
