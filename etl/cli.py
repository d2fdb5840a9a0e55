"""The ``nsml-etl`` command: thin click wrappers over the library.

Exit codes: 0 all exported, 1 some pairs failed (the rest landed), 2 usage or bad input,
3 authentication failed, 4 database error, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import SETTINGS, credentials_from_env, resolve_settings
from .errors import EXIT_SIGINT, EXIT_SIGTERM, EtlError
from .pipeline import ExportReport

log = logging.getLogger("etl")

_CLICK_TYPES: dict[str, click.ParamType] = {
    "concurrency": click.IntRange(min=1),
    "max_attempts": click.IntRange(min=1),
    "chunk_size": click.IntRange(min=1),
    "timeout": click.FloatRange(min=0, min_open=True),
    "backoff_initial": click.FloatRange(min=0),
    "backoff_max": click.FloatRange(min=0),
    "retry_after_max": click.FloatRange(min=0),
}
# Options shown in --help of export; the tuning ones stay available in config files and env.
_EXPORT_SETTINGS = ("db_url", "table", "base_url", "concurrency", "timeout", "max_attempts",
                    "chunk_size", "backoff_initial", "backoff_max", "retry_after_max")


def settings_options(names: tuple[str, ...]) -> Callable:
    """Decorator adding one option per setting, plus --config; defaults stay None so the
    config layering (defaults < file < env < flags) can tell what was given."""

    def decorate(func: Callable) -> Callable:
        for setting in reversed([s for s in SETTINGS if s.name in names]):
            func = click.option(
                setting.flag,
                setting.name,
                type=_CLICK_TYPES.get(setting.name, str),
                default=None,
                help=f"{setting.help} [env {setting.env}; default {setting.default}]",
            )(func)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="TOML file with settings (keys as the option names, e.g. concurrency = 16). "
            "Flags beat env vars, env vars beat the file. Secrets are refused there.",
        )(func)

    return decorate


def output_options(func: Callable) -> Callable:
    func = click.option("-q", "--quiet", is_flag=True,
                        help="Print only errors and the final summary.")(func)
    return click.option("-v", "--verbose", is_flag=True,
                        help="Log each request and chunk (debug level); never a secret.")(func)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    log.propagate = False


def handle_errors(func: Callable) -> Callable:
    """Turn library errors into one-line messages and documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EtlError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


class _Interrupts:
    """SIGINT/SIGTERM set an event the pipeline polls, so fetched runs are still committed."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.stop.is_set():  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signal = signum
        self.stop.set()
        click.echo(f"\n{signal.Signals(signum).name}: stopping; committing what was fetched",
                   err=True)

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int | None:
        return {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}.get(self.signal)


class _Progress:
    """A tqdm bar on a terminal; nothing otherwise (cron gets only the summary)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, report: ExportReport) -> None:
        if self.bar is not None:
            self.bar.n = report.fetched + len(report.failed)
            self.bar.set_postfix(retried=report.retried, failed=len(report.failed),
                                 refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_report(report: ExportReport) -> None:
    if report.failed:
        click.echo(f"Failed pairs ({len(report.failed)}):")
        for failure in report.failed:
            attempts = f"{failure.attempts} attempt{'s' if failure.attempts != 1 else ''}"
            click.echo(f"  {failure.pair.project_id}\t{failure.pair.run_name}\t"
                       f"{failure.reason} [{attempts}]")
    click.echo(report.summary())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsml-etl")
def main() -> None:
    """Export CLOVA NSML runs into a SQL table.

    Exit codes: 0 all exported; 1 some pairs failed (the rest landed); 2 usage or bad
    input; 3 authentication failed; 4 database error; 130/143 interrupted.
    """


@main.command()
@click.option("--pairs", "pairs_path", required=True, metavar="PATH",
              help="CSV (project_id,run_name header) or JSON Lines file of pairs; - for stdin.")
@settings_options(_EXPORT_SETTINGS)
@output_options
@handle_errors
def export(pairs_path: str, config_file: Path | None, verbose: bool, quiet: bool,
           **flags: Any) -> None:
    """Fetch each (projectId, runName) pair and upsert it into the table.

    Credentials come from NCP_ACCESS_KEY and NCP_SECRET_KEY (and NCP_APIGW_API_KEY when the
    gateway asks for an API key), never from flags or files.
    """
    from .load import RunStore, check_database, create_engine
    from .pairs import read_pairs
    from .pipeline import export_runs

    _setup_logging(verbose, quiet)
    settings = resolve_settings(flags, config_file)
    credentials = credentials_from_env()
    pairs = read_pairs(pairs_path)
    engine = create_engine(settings.db_url)
    try:
        check_database(engine)
        store = RunStore(engine, settings.table)
        progress = _Progress(len(pairs), enabled=sys.stderr.isatty() and not quiet)
        with _Interrupts() as interrupts:
            try:
                report = export_runs(pairs, settings, credentials, store, total=len(pairs),
                                     stop=interrupts.stop, progress=progress)
            finally:
                progress.close()
    finally:
        engine.dispose()
    if report.auth_error is not None:
        click.echo(f"Error: {report.auth_error}; nothing was written", err=True)
    print_report(report)
    sys.exit(interrupts.exit_code or report.exit_code)


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), show_default=True,
              help="Port; 0 picks a free one.")
@click.option("--seed", default=1, show_default=True, help="Seed of the generated dataset.")
@click.option("--projects", default=2, type=click.IntRange(min=0), show_default=True,
              help="Projects in the dataset.")
@click.option("--runs", "runs_per_project", default=10, type=click.IntRange(min=0),
              show_default=True, help="Runs per project.")
@click.option("--fault-rate", default=0.0, type=click.FloatRange(0, 1), show_default=True,
              help="Share of requests answered with an injected fault.")
@click.option("--faults", default=None, metavar="KIND,...",
              help="Fault kinds to inject (default: all): 429, 429-no-retry-after, 500, "
              "502-html, 503, 504, drop, truncate, slow.")
@click.option("--fault-streak", default=None, type=click.IntRange(min=1),
              help="At most this many faults in a row for one path.")
@click.option("--latency", default=0.0, type=click.FloatRange(min=0), show_default=True,
              help="Seconds added to every response.")
@click.option("--slow-seconds", default=2.0, type=click.FloatRange(min=0), show_default=True,
              help="Delay of a 'slow' fault.")
@click.option("--retry-after", default=1, type=click.IntRange(min=0), show_default=True,
              help="Retry-After seconds sent with 429s.")
@click.option("--address-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the base URL here once listening.")
@click.option("--write-pairs", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the dataset's pairs as a CSV pairs file.")
@handle_errors
def simulate(host: str, port: int, seed: int, projects: int, runs_per_project: int,
             fault_rate: float, faults: str | None, fault_streak: int | None, latency: float,
             slow_seconds: float, retry_after: int, address_file: Path | None,
             write_pairs: Path | None) -> None:
    """Serve a local NSML API (signature-checked, deterministic data, optional faults).

    It accepts the keys in NCP_ACCESS_KEY / NCP_SECRET_KEY (and NCP_APIGW_API_KEY if set).
    """
    from .simulator import FAULT_KINDS, Simulator, SimulatorConfig

    credentials = credentials_from_env()
    kinds = tuple(k.strip() for k in faults.split(",")) if faults else FAULT_KINDS
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise click.BadParameter(f"unknown fault kind(s): {', '.join(unknown)}",
                                 param_hint="--faults")
    config = SimulatorConfig(
        access_key=credentials.access_key, secret_key=credentials.secret_key,
        api_key=credentials.api_key, seed=seed, projects=projects,
        runs_per_project=runs_per_project, fault_rate=fault_rate, fault_kinds=kinds,
        fault_streak=fault_streak, latency=latency, slow_seconds=slow_seconds,
        retry_after=retry_after,
    )
    sim = Simulator(config, host=host, port=port)
    if write_pairs:
        with open(write_pairs, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["project_id", "run_name"])
            writer.writerows(sim.pairs())
    if address_file:
        tmp = address_file.with_name(address_file.name + ".tmp")
        tmp.write_text(sim.base_url + "\n")
        os.replace(tmp, address_file)  # readers never see a half-written address
    click.echo(f"NSML simulator serving {len(sim.pairs())} runs at {sim.base_url}", err=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
