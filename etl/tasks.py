"""The library's functions behind ``nsml-etl``'s other commands, re-exported by the package:
:func:`write_run_list` (``pairs``), :func:`create_views` (``views``), :func:`build_report`
(``report``), and :func:`set_gpu_server`, :func:`unset_gpu_servers`,
:func:`load_gpu_servers`, :func:`list_gpu_servers` (``gpu-servers set/unset/load/list``).

Each takes its settings as :func:`~nsml_etl.export` does (keyword arguments checked against
:class:`~nsml_etl.Settings`, over the environment, over ``config_file``; or one ``settings``),
does the whole job and returns what the command prints: none prints, exits or installs a
handler. Every one that reaches the database opens one :class:`~nsml_etl.warehouse.Warehouse`
(in :func:`_opened`), whose opening makes the checks its purpose needs before the first
statement (a reading one never creates a SQLite file).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Credentials, Settings, given_credentials, settings_from_arguments
from .errors import InputError
from .files import writing

if TYPE_CHECKING:
    from .reporting.report import Table
    from .reporting.views import View
    from .warehouse import Warehouse
    from .warehouse.gpuservers import GpuServer

# The settings each function takes (the CLI gives its command these options, and no others).
RUN_LIST_SETTINGS = (
    "base_url",
    "timeout",
    "max_attempts",
    "list_timezone",
    "ca_bundle",
    "backoff_initial",
    "backoff_max",
    "retry_after_max",
    "rate_limit",
)
VIEWS_SETTINGS = ("db_url", "table", "timezone")
REPORT_SETTINGS = ("db_url", "table", "timezone")
GPU_SERVERS_SETTINGS = ("db_url",)
GPU_SERVERS_LIST_SETTINGS = ("db_url", "table")
# The columns a run list's pairs file carries after project_id and run_name.
RUN_LIST_COLUMNS = ["status", "create_time", "update_time"]


def _opened(settings: Settings, purpose: str, *, runs_table: bool = True) -> Warehouse:
    """The warehouse of ``settings``, opened for ``purpose`` (a :class:`Purpose`'s value,
    ``"write"`` or ``"read"``, so that importing this module loads no database code; a
    reading one never creates a SQLite file). With ``runs_table``, ``settings.table`` must be
    there already (``views`` and ``report`` read what an export wrote: a mistyped ``--db`` or
    ``--table`` must not pass for an empty database); without, the database alone is opened
    (the GPU servers table)."""
    from .warehouse import Purpose, Warehouse

    if runs_table:
        return Warehouse.open(settings, Purpose(purpose), require_table=True)
    return Warehouse.open(settings.db_url, Purpose(purpose))


def checked_project_ids(projects: str | Iterable[str] | None) -> list[str]:
    """A list of project ids; one id given as a string is a list of one."""
    items = [projects] if isinstance(projects, str) else list(projects or ())
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise InputError(f"projects[{index}]: expected a project id, got {item!r}")
    if not items:
        raise InputError("projects: no project ids given")
    return items


def write_run_list(
    out: str | os.PathLike[str],
    *,
    projects: str | Iterable[str] | None = None,
    settings: Settings | None = None,
    credentials: Credentials | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> int:
    """List runs through the run list API (those of ``projects``, or every run the key sees)
    and write them to ``out`` as a pairs file (``"-"``: standard output, as the runs come),
    usable as ``export(pairs=...)``; besides project_id and run_name it carries status,
    create_time and update_time (UTC). Returns how many runs it wrote. The settings are those
    of :data:`RUN_LIST_SETTINGS`."""
    from .nsml.client import NsmlClient
    from .nsml.discovery import discover_runs
    from .pairs import write_pairs, write_pairs_file

    settings = settings_from_arguments(
        "write_run_list", settings, setting_values, config_file, RUN_LIST_SETTINGS
    )
    wanted = checked_project_ids(projects) if projects is not None else None
    client = NsmlClient(settings, given_credentials(credentials))
    try:
        runs = discover_runs(client, projects=wanted, timezone=settings.list_timezone)
        rows = (
            (
                *run.pair,
                run.status,
                *(t and t.isoformat(sep=" ") for t in (run.create_time, run.update_time)),
            )
            for run in runs
        )
        if os.fspath(out) == "-":  # as the runs come: there is no file to write aside
            count = write_pairs(sys.stdout, rows, RUN_LIST_COLUMNS)
            sys.stdout.flush()  # here, where a closed or broken stdout is the caller's to see
            return count
        return write_pairs_file(Path(out), rows, RUN_LIST_COLUMNS)
    finally:
        client.close()


def create_views(
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> list[View]:
    """Create or replace the reporting views (one per file in ``sql/``) of ``table`` in
    ``db_url``, which must hold that table already; returns them (``name``, ``question``)."""
    from .reporting.views import create_views as create

    settings = settings_from_arguments(
        "create_views", settings, setting_values, config_file, VIEWS_SETTINGS
    )
    with _opened(settings, "write") as warehouse:
        return create(warehouse, settings.timezone)


@dataclass
class ReportTables:
    """The sections :func:`build_report` read: ``tables`` all of them, ``shown`` those asked
    for, ``source`` the table and database they came from, ``page`` all of them as the HTML
    page shows them; rendered by its methods."""

    tables: list[Table]
    shown: list[Table]
    source: str
    page: list[Table]

    def as_text(self) -> str:
        from .reporting.formats import as_text

        return as_text(self.shown)

    def as_json(self) -> str:
        from .reporting.formats import as_json

        return as_json(self.shown)

    def as_csv(self) -> str:
        """The first section shown as CSV (one section: the sections' columns differ)."""
        from .reporting.formats import as_csv

        return as_csv(self.shown[0])

    def write_csv_files(self, directory: str | os.PathLike[str]) -> list[Path]:
        """One CSV file per section shown, ``NAME.csv`` in ``directory``; their paths."""
        from .reporting.formats import write_csv_files

        return write_csv_files(self.shown, Path(directory))

    def limit_notes(self) -> list[str]:
        """``NAME: 20 of 54 rows ...`` for each section shown that a limit cut short."""
        from .reporting.formats import limit_note

        notes = ((table.name, limit_note(table)) for table in self.shown)
        return [f"{name}: {note}" for name, note in notes if note is not None]

    def write_html(self, path: str | os.PathLike[str]) -> None:
        """Every section as one self-contained HTML page (a FIFO or device written in place)."""
        from .clock import utc_now
        from .reporting.html import as_html

        with writing(Path(path), "--html") as handle:
            handle.write(as_html(self.page, source=self.source, now=utc_now()))


def build_report(
    *,
    sections: Iterable[str] = (),
    limit: int | None = None,
    since: date | None = None,
    until: date | None = None,
    unit: str | None = None,
    for_csv: bool = False,
    for_html: bool = False,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> ReportTables:
    """Read the report of ``table`` in ``db_url`` from its reporting views (made current, or
    read as they are on a read-only database): runs by project, active runs, GPU servers,
    images, creators, env keys, exports, and the analytics of the days from ``since`` 00:00 to
    ``until`` 24:00 in ``timezone`` (default: from the Monday 7 weeks before to today there),
    cut into ``unit`` (``"day"``, ``"week"`` or ``"month"``; None: one row). ``sections``
    names those to show (all by default; a view's own name works too), ``limit`` the rows per
    table (None: each section's default; 0: all). ``for_csv``: the sections are for CSV, every
    row unless ``limit`` says; ``for_html``: ``page`` holds them for the HTML page too, whose
    lists stay short."""
    from .clock import utc_now
    from .reporting.analytics import local_today, period_for, report_sections
    from .reporting.formats import csv_limit
    from .reporting.report import section_name, views_for_reading

    settings = settings_from_arguments(
        "build_report", settings, setting_values, config_file, REPORT_SETTINGS
    )
    if isinstance(sections, str):
        sections = [sections]
    wanted = {section_name(name, settings.table) for name in sections}
    period = period_for(
        since, until, local_today(utc_now(), settings.timezone), settings.timezone, unit
    )
    with _opened(settings, "read") as warehouse:
        views_for_reading(warehouse)  # current, or read as they are if read-only
        rows = csv_limit(limit) if for_csv else limit  # CSV: every row unless limit says
        tables = report_sections(warehouse.engine, settings.table, period, rows, utc_now())
        page = tables
        if for_html and rows != limit:  # the page keeps its lists short
            page = report_sections(warehouse.engine, settings.table, period, limit, utc_now())
        source = f"table {settings.table} in {warehouse.description}"
    shown = [table for table in tables if not wanted or table.name in wanted]
    return ReportTables(tables, shown, source, page)


def set_gpu_server(
    code: int,
    gpus: int,
    label: str | None = None,
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> None:
    """Record that GPU server ``code`` (a run's gpuSvrCode) has ``gpus`` GPUs, in
    ``nsml_gpu_servers`` of ``db_url`` (made if missing); ``label`` says what it is."""
    from .warehouse.gpuservers import GpuServer, check_server

    settings = settings_from_arguments(
        "set_gpu_server", settings, setting_values, config_file, GPU_SERVERS_SETTINGS
    )
    check_server(code, gpus, "gpu-servers set")
    with _opened(settings, "write", runs_table=False) as warehouse:
        warehouse.set_gpu_servers([GpuServer(code, gpus, label)])


def unset_gpu_servers(
    codes: Iterable[int],
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> int:
    """Forget the GPU counts of these servers (their GPU-hours become unknown); returns how
    many of them had one."""
    settings = settings_from_arguments(
        "unset_gpu_servers", settings, setting_values, config_file, GPU_SERVERS_SETTINGS
    )
    with _opened(settings, "write", runs_table=False) as warehouse:
        return warehouse.unset_gpu_servers(codes)


def load_gpu_servers(
    file: str | os.PathLike[str],
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> int:
    """Set the GPU counts of a TOML file (``[servers]`` with ``CODE = GPUS`` or ``CODE = {
    gpus = N, label = "..." }``): the file is checked whole before the database is touched, and
    all of them are set or, on any error, none. Returns how many."""
    from .warehouse.gpuservers import read_toml

    settings = settings_from_arguments(
        "load_gpu_servers", settings, setting_values, config_file, GPU_SERVERS_SETTINGS
    )
    servers = read_toml(Path(file))
    with _opened(settings, "write", runs_table=False) as warehouse:
        return warehouse.set_gpu_servers(servers)


@dataclass
class GpuServerList:
    """What :func:`list_gpu_servers` read: the ``known`` counts, and the servers ``table`` has
    runs on without one (``missing``: code, eng_full_name, runs)."""

    known: list[GpuServer]
    missing: list[tuple[Any, ...]]
    table: str

    def as_text(self) -> str:
        """The known counts as tab-separated lines, then the servers without one."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["gpu_svr_code", "gpus", "label"])
        writer.writerows((s.gpu_svr_code, s.gpus, s.label or "") for s in self.known)
        if self.missing:
            out.write(
                f"\nServers with runs in {self.table} but no GPU count "
                "(set them with 'nsml-etl gpu-servers set CODE GPUS'):\n"
            )
            writer.writerow(["gpu_svr_code", "eng_full_name", "runs"])
            writer.writerows((code, name or "", runs) for code, name, runs in self.missing)
        return out.getvalue()


def list_gpu_servers(
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> GpuServerList:
    """The known GPU counts of ``db_url``, and the servers that ``table`` has runs on without
    one. Reads only: a SQLite file that does not exist is a :class:`DatabaseError`."""
    settings = settings_from_arguments(
        "list_gpu_servers", settings, setting_values, config_file, GPU_SERVERS_LIST_SETTINGS
    )
    with _opened(settings, "read", runs_table=False) as warehouse:
        known, missing = warehouse.list_gpu_servers(settings.table)
    return GpuServerList(known, missing, settings.table)


def suggest_gpu_servers(
    *,
    settings: Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **setting_values: Any,
) -> list[Any]:
    """The GPU counts that the names of the servers ``table`` has runs on without one state
    (``gpus`` None where a name says nothing); reads only, writes nothing."""
    settings = settings_from_arguments(
        "suggest_gpu_servers", settings, setting_values, config_file, GPU_SERVERS_LIST_SETTINGS
    )
    with _opened(settings, "read", runs_table=False) as warehouse:
        return list(warehouse.suggest_gpu_servers(settings.table))
