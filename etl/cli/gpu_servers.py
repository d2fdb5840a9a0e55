"""``nsml-etl gpu-servers set/unset/load/list``: GPUs per GPU server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import api
from ..config import resolve_settings
from ._common import handle_errors, settings_options


@click.group("gpu-servers")
def gpu_servers() -> None:
    """GPUs per GPU server (nsml_gpu_servers), for GPU-hours in the reports.

    nsml-etl never sets a count by itself: servers without one show run-hours only, and are
    listed by 'gpu-servers list' and the nsml_gpu_servers_without_count view; 'gpu-servers
    suggest' reads the counts their names state into a file to check and load.
    """


@gpu_servers.command("set")
@click.argument("code", type=click.IntRange(min=0))
@click.argument("gpus", type=click.IntRange(min=0))
@click.option("--label", default=None, help="What the server is, for people (e.g. 'A100 x2').")
@settings_options(api.GPU_SERVERS_SETTINGS)
@handle_errors
def gpu_servers_set(
    code: int, gpus: int, label: str | None, config_file: Path | None, **flags: Any
) -> None:
    """Record that GPU server CODE (a run's gpuSvrCode) has GPUS GPUs."""
    api.set_gpu_server(code, gpus, label, settings=resolve_settings(flags, config_file))
    click.echo(f"GPU server {code}: {gpus} GPU{'' if gpus == 1 else 's'}.", err=True)


@gpu_servers.command("unset")
@click.argument("codes", nargs=-1, required=True, type=click.IntRange(min=0))
@settings_options(api.GPU_SERVERS_SETTINGS)
@handle_errors
def gpu_servers_unset(codes: tuple[int, ...], config_file: Path | None, **flags: Any) -> None:
    """Forget the GPU counts of these servers (their GPU-hours become unknown)."""
    removed = api.unset_gpu_servers(codes, settings=resolve_settings(flags, config_file))
    click.echo(f"Removed {removed} of {len(set(codes))} servers.", err=True)


@gpu_servers.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(api.GPU_SERVERS_SETTINGS)
@handle_errors
def gpu_servers_load(file: Path, config_file: Path | None, **flags: Any) -> None:
    """Set the GPU counts of a TOML file ([servers] with CODE = GPUS or
    CODE = { gpus = N, label = "..." }), all of them or, on any error, none."""
    count = api.load_gpu_servers(file, settings=resolve_settings(flags, config_file))
    click.echo(f"Set {count} GPU servers from {file}.", err=True)


@gpu_servers.command("list")
@settings_options(api.GPU_SERVERS_LIST_SETTINGS)
@handle_errors
def gpu_servers_list(config_file: Path | None, **flags: Any) -> None:
    """Print the known GPU counts, then the servers that --table has runs on without one."""
    listed = api.list_gpu_servers(settings=resolve_settings(flags, config_file))
    click.echo(listed.as_text(), nl=False)


@gpu_servers.command("suggest")
@settings_options(api.GPU_SERVERS_LIST_SETTINGS)
@handle_errors
def gpu_servers_suggest(config_file: Path | None, **flags: Any) -> None:
    """Print a TOML file for 'gpu-servers load' with the GPU counts that the names of the
    servers without one state ('[GPU] A100 2EA' is 2, '[Notebook] 4vCPU' is 0); servers whose
    names say nothing are comments. Writes nothing: check the file, then load it."""
    from ..warehouse.gpuservers import suggestions_toml

    suggestions = api.suggest_gpu_servers(settings=resolve_settings(flags, config_file))
    click.echo(suggestions_toml(suggestions), nl=False)
    stated = sum(1 for s in suggestions if s.gpus is not None)
    click.echo(
        f"{stated} of {len(suggestions)} servers without a GPU count have one in their name.",
        err=True,
    )
