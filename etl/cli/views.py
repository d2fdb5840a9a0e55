"""``nsml-etl views``: create or replace the reporting views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import resolve_settings
from ._common import Command, handle_errors, settings_options


@click.command(cls=Command)
@settings_options(("db_url", "table"))
@handle_errors
def views(config_file: Path | None, **flags: Any) -> None:
    """Create or replace the reporting views (one per file in sql/) in the database."""
    from ..reporting.report import require_runs_table
    from ..reporting.views import create_views
    from ..warehouse.engine import check_database, check_table, check_writable, create_engine

    settings = resolve_settings(flags, config_file)
    engine = create_engine(settings.db_url)
    try:
        check_database(engine)
        check_writable(engine)
        check_table(engine, settings.table)
        require_runs_table(engine, settings.table)  # never a new, empty database
        created = create_views(engine, settings.table)
    finally:
        engine.dispose()
    for view in created:
        click.echo(f"{view.name}: {view.question}")
    click.echo(f"Created {len(created)} views.", err=True)
