"""``nsml-etl gpu-servers set/unset/load/list``: GPUs per GPU server."""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..config import resolve_settings
from ._common import handle_errors, settings_options


@click.group("gpu-servers")
def gpu_servers() -> None:
    """GPUs per GPU server (nsml_gpu_servers), for GPU-hours in the reports.

    nsml-etl never guesses a count: servers without one show run-hours only, and are listed
    by 'gpu-servers list' and the nsml_gpu_servers_without_count view.
    """


@contextlib.contextmanager
def _gpu_engine(
    flags: dict[str, Any], config_file: Path | None, writes: bool = True
) -> Iterator[tuple[Any, Any]]:
    """(engine, settings) for one gpu-servers command, checked (writable too, for a command
    that ``writes``), disposed of afterwards."""
    from ..warehouse.engine import check_database, check_writable, create_engine

    settings = resolve_settings(flags, config_file)
    engine = create_engine(settings.db_url)
    try:
        check_database(engine)
        if writes:
            check_writable(engine)
        yield engine, settings
    finally:
        engine.dispose()


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
    from ..warehouse.gpuservers import GpuServer, check_server, set_servers

    check_server(code, gpus, "gpu-servers set")
    with _gpu_engine(flags, config_file) as (engine, _):
        set_servers(engine, [GpuServer(code, gpus, label)])
    click.echo(f"GPU server {code}: {gpus} GPU{'' if gpus == 1 else 's'}.", err=True)


@gpu_servers.command("unset")
@click.argument("codes", nargs=-1, required=True, type=click.IntRange(min=0))
@settings_options(("db_url",))
@handle_errors
def gpu_servers_unset(codes: tuple[int, ...], config_file: Path | None, **flags: Any) -> None:
    """Forget the GPU counts of these servers (their GPU-hours become unknown)."""
    from ..warehouse.gpuservers import unset_servers

    with _gpu_engine(flags, config_file) as (engine, _):
        removed = unset_servers(engine, codes)
    click.echo(f"Removed {removed} of {len(set(codes))} servers.", err=True)


@gpu_servers.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(("db_url",))
@handle_errors
def gpu_servers_load(file: Path, config_file: Path | None, **flags: Any) -> None:
    """Set the GPU counts of a TOML file ([servers] with CODE = GPUS or
    CODE = { gpus = N, label = "..." }), all of them or, on any error, none."""
    from ..warehouse.gpuservers import read_toml, set_servers

    servers = read_toml(file)  # checked whole before the database is touched
    with _gpu_engine(flags, config_file) as (engine, _):
        count = set_servers(engine, servers)
    click.echo(f"Set {count} GPU servers from {file}.", err=True)


@gpu_servers.command("list")
@settings_options(("db_url", "table"))
@handle_errors
def gpu_servers_list(config_file: Path | None, **flags: Any) -> None:
    """Print the known GPU counts, then the servers that --table has runs on without one."""
    from ..reporting.report import refuse_missing_sqlite_file
    from ..warehouse.gpuservers import list_servers

    with _gpu_engine(flags, config_file, writes=False) as (engine, settings):
        refuse_missing_sqlite_file(engine)  # it reads: a mistyped path must not become a file
        known, missing = list_servers(engine, settings.table)
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
