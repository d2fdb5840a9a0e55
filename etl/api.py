"""The Python API: :func:`export` and :func:`load`, what ``nsml-etl export`` and ``load`` do.

Each does the whole job (settings, credentials, which runs, the database and its checks, the
skip set, discovery, the raw archive) and returns an :class:`~nsml_etl.outcome.ExportReport`.
Neither prints, installs a signal handler or exits: problems the caller must act on are
exceptions under :class:`~nsml_etl.errors.EtlError`; runs that failed on their own (and a run
list that broke off) are in the report. The CLI maps its options to these arguments and their
outcome to messages and exit codes; nothing else.

Interrupts: a ``stop`` event ends an export as a first SIGINT ends the CLI's (no new requests,
those in flight get a short grace, what was fetched is committed, the report says
``interrupted``); ``cancel`` cuts the requests in flight at once, never the commit. A
KeyboardInterrupt (Ctrl-C in a notebook) or any other exception that reaches the calling thread
while runs are fetched and written acts as ``stop`` (a second one as ``cancel``) and is
re-raised once what was fetched is committed: the fetching and writing run on a thread of their
own while the calling thread only waits, so an interrupt can never land inside a commit.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Credentials, Settings, given_credentials, settings_from_arguments
from .errors import InputError
from .files import display_name
from .metrics import recording
from .model import RunToFetch
from .outcome import ExportReport, ProgressCallback
from .tasks import (
    GPU_SERVERS_LIST_SETTINGS,
    GPU_SERVERS_SETTINGS,
    REPORT_SETTINGS,
    RUN_LIST_SETTINGS,
    VIEWS_SETTINGS,
    GpuServerList,
    ReportTables,
    build_report,
    checked_project_ids,
    create_views,
    list_gpu_servers,
    load_gpu_servers,
    set_gpu_server,
    suggest_gpu_servers,
    unset_gpu_servers,
    write_run_list,
)

if TYPE_CHECKING:
    from .warehouse import Warehouse

__all__ = [
    "GPU_SERVERS_LIST_SETTINGS",
    "GPU_SERVERS_SETTINGS",
    "LOAD_SETTINGS",
    "REPORT_SETTINGS",
    "RUN_LIST_SETTINGS",
    "VIEWS_SETTINGS",
    "GpuServerList",
    "ReportTables",
    "build_report",
    "create_views",
    "export",
    "list_gpu_servers",
    "load",
    "load_gpu_servers",
    "set_gpu_server",
    "suggest_gpu_servers",
    "unset_gpu_servers",
    "write_run_list",
]

# A replay is not paced by the API, so larger transactions pay off: a chunk's commit and
# fixed statements took about 25 ms on SQLite, the time of some 250 runs. 4,000 pending runs
# of 20 env keys peak near 130 MB (2,000: 116 MB; 10,000: 185 MB).
LOAD_DEFAULTS = {"chunk_size": 4000}
# The settings load() takes; the others concern the API.
LOAD_SETTINGS = ("db_url", "table", "chunk_size", "max_env_columns", "metrics_file")
# Pairs a dry run keeps in its report (report.preview), to show what would be fetched.
PREVIEW_PAIRS = 20
# How often the calling thread looks up from waiting for the work (it wakes at once for an
# interrupt; this only bounds how late it notices that the work ended).
WAIT_SLICE_S = 0.1

PAIRS, ALL, PROJECTS, LOAD = "pairs", "all", "projects", "load"

T = TypeVar("T")


def export(
    pairs: str | os.PathLike[str] | Iterable[Any] | None = None,
    *,
    all_runs: bool = False,
    projects: str | Iterable[str] | None = None,
    skip_finished: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    credentials: Credentials | None = None,
    save_raw: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    cancel: threading.Event | None = None,
    **setting_values: Any,
) -> ExportReport:
    """Fetch runs from the NSML API and upsert them into ``table`` of ``db_url``.

    Which runs: exactly one of ``pairs`` (a pairs file's path, ``"-"`` for stdin, or an iterable
    of ``(project_id, run_name)`` pairs), ``all_runs=True`` (every run the key can see) or
    ``projects`` (the runs of these project ids). ``skip_finished`` skips runs already stored
    with a terminal status (with ``nodes``, once their node list is stored too). Every other
    keyword argument is a setting, a field of :class:`Settings` (``db_url``, ``table``,
    ``concurrency``, ...: the CLI's options; ``nodes=True`` also fetches each run's node list),
    checked against them (another name is an :class:`InputError`): an argument beats its
    ``NSML_ETL_*`` environment variable, which beats ``config_file``, which beats the default;
    ``settings`` (a resolved :class:`Settings`, as the CLI passes) replaces all of them.
    ``credentials`` default to ``NCP_ACCESS_KEY``/``NCP_SECRET_KEY``/``NCP_APIGW_API_KEY``.
    ``save_raw`` also writes every response to a JSON Lines file. ``dry_run`` checks settings,
    that credentials are given, pairs and database (it sends no request: ``nsml-etl check``
    tries the credentials) and returns a report with ``dry_run`` set and ``preview`` (the first
    pairs), sending and writing nothing; its ``dry_run_text()`` and ``dry_run_event()`` say so.
    ``progress(report)`` is called as runs complete; see the module docstring for ``stop`` and
    ``cancel``.

    However it ends, ``report.metrics`` holds the run's figures (:mod:`nsml_etl.metrics`), and
    ``metrics_file`` (when given) is rewritten with them in the Prometheus text format.

    Raises :class:`InputError` (bad arguments or pairs, with file and line),
    :class:`AuthenticationError` (the gateway refused the keys; ``.report`` says what came
    before) and :class:`DatabaseError`. Runs that failed on their own are ``report.failed``.
    A spent API quota (429 errorCode 400, confirmed by a second request) stops the export
    without raising: ``report.quota_error`` holds it and ``report.not_attempted`` counts the runs
    left (exit code 1); the next export after the quota resets continues.
    """
    _check_types(
        all_runs=(all_runs, FLAG),
        skip_finished=(skip_finished, FLAG),
        dry_run=(dry_run, FLAG),
        save_raw=(save_raw, PATH),
        config_file=(config_file, PATH),
        progress=(progress, CALLBACK),
        stop=(stop, EVENT),
        cancel=(cancel, EVENT),
    )
    settings = settings_from_arguments("export", settings, setting_values, config_file)
    mode = _mode(pairs, all_runs, projects)  # before the metrics: no run was asked for
    stop = stop if stop is not None else threading.Event()
    cancel = cancel if cancel is not None else threading.Event()
    with recording(settings, "export", stop, enabled=not dry_run) as run:
        credentials = given_credentials(credentials)
        project_ids = checked_project_ids(projects) if mode == PROJECTS else None
        with contextlib.ExitStack() as cleanup:
            given = cleanup.enter_context(_collect_pairs(pairs)) if mode == PAIRS else None
            warehouse = _open_warehouse(settings, cleanup, dry_run)
            if dry_run and not skip_finished:
                return _dry_run_report(settings, mode, given, project_ids)
            from .nsml.discovery import discover_runs, then_unlisted
            from .nsml.throttle import QuotaGuard
            from .pipeline import export_runs
            from .transform import TERMINAL_STATUSES

            skip = warehouse.stored_pairs(TERMINAL_STATUSES) if skip_finished else set()
            if skip and settings.nodes:  # a finished run is skipped once its nodes are stored
                skip &= warehouse.stored_pairs_with_nodes()
            quota = QuotaGuard()  # the run list's requests and the fetches spend one quota
            if dry_run:
                skipped = _skipped(skip, given, project_ids)
                return _dry_run_report(settings, mode, given, project_ids, skipped)
            source: Iterator[RunToFetch]
            if given is not None:
                source, total = map(RunToFetch, given), len(given)
            else:
                from .nsml.client import NsmlClient
                from .nsml.watchdog import Watchdog

                lister = NsmlClient(
                    settings,
                    credentials,
                    watchdog=Watchdog(cancel=cancel, stop=stop),
                    quota=quota,
                    on_response=run.count_response,
                )
                cleanup.callback(lister.close)
                # Then the stored unfinished runs the list no longer shows (deleted upstream:
                # only their 404 tells, and marks them gone).
                source = then_unlisted(
                    discover_runs(lister, projects=project_ids, timezone=settings.list_timezone),
                    warehouse.store.unfinished_pairs(project_ids),
                )
                total = None
            archive = _archive(save_raw, cleanup)
            options = {
                "mode": mode,
                "pairs_file": _pairs_file(pairs) if mode == PAIRS else None,
                "projects": project_ids,
                "skip_finished": skip_finished,
                "save_raw": display_name(save_raw) if save_raw else None,
            }
            report = _commit_before_interrupts(
                lambda: export_runs(
                    source,
                    settings,
                    credentials,
                    warehouse,
                    total=total,
                    stop=stop,
                    progress=run.watch(progress),
                    archive=archive,
                    skip=skip,
                    cancel=cancel,
                    options=options,
                    quota=quota,
                    on_response=run.count_response,
                    finishing=_finishing(warehouse),
                ),
                stop,
                cancel,
            )
        report.mode, report.settings = mode, settings
        report.projects, report.skip_finished = project_ids, skip_finished
        if report.auth_error is not None:
            report.auth_error.report = report
            raise report.auth_error
        return report


def load(
    file: str | os.PathLike[str],
    *,
    config_file: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    **setting_values: Any,
) -> ExportReport:
    """Load a raw archive (``export(save_raw=...)``) or plain run objects, one JSON object per
    line, into ``table`` of ``db_url``, with the same transform and upsert as :func:`export`
    and without calling the API. ``file`` may be gzip-compressed; ``"-"`` reads stdin. The
    settings are keyword arguments as for :func:`export`, those of :data:`LOAD_SETTINGS` only;
    ``chunk_size`` defaults to 4,000 here. Lines that cannot be used are ``report.failed``
    (named ``FILE:LINE``); the rest land. ``stop`` ends the reading, and what was read is
    committed. ``report.metrics`` and ``metrics_file`` as for :func:`export`. Raises
    :class:`InputError` and :class:`DatabaseError`."""
    _check_types(
        file=(file, FILE),
        config_file=(config_file, PATH),
        progress=(progress, CALLBACK),
        stop=(stop, EVENT),
    )
    settings = settings_from_arguments(
        "load", settings, setting_values, config_file, LOAD_SETTINGS, LOAD_DEFAULTS
    )
    stop = stop if stop is not None else threading.Event()
    with recording(settings, "load", stop) as run:
        from .archive import iter_archive

        records = iter_archive(file)  # a missing file fails here, before the database is touched
        with contextlib.ExitStack() as cleanup:
            warehouse = _open_warehouse(settings, cleanup)
            from .pipeline import load_archive

            options = {**settings.public_dict(), "file": display_name(file)}
            report = _commit_before_interrupts(
                lambda: load_archive(
                    records,
                    warehouse,
                    chunk_size=settings.chunk_size,
                    options=options,
                    progress=run.watch(progress),
                    stop=stop,
                    finishing=_finishing(warehouse),
                ),
                stop,
                threading.Event(),
            )
        report.mode, report.settings = LOAD, settings
        return report


# What an argument of export() or load() may be, and how its message says so. The settings
# arguments are checked by their settings' parsers; pairs, projects, settings and credentials
# by their own functions.
ArgumentKind = tuple[Callable[[object], bool], str]
FLAG: ArgumentKind = (lambda v: isinstance(v, bool), "True or False")
PATH: ArgumentKind = (lambda v: v is None or isinstance(v, str | os.PathLike), "a path or None")
FILE: ArgumentKind = (lambda v: isinstance(v, str | os.PathLike), 'a path, or "-" for stdin')
CALLBACK: ArgumentKind = (
    lambda v: v is None or callable(v),
    "a callable (called with the report) or None",
)
EVENT: ArgumentKind = (
    lambda v: v is None or isinstance(v, threading.Event),
    "a threading.Event or None",
)


def _check_types(**arguments: tuple[object, ArgumentKind]) -> None:
    """:class:`InputError` naming the first argument that is not what it may be (before
    anything is read or written: a wrong type would fail half-way, as a TypeError)."""
    for name, (value, (ok, takes)) in arguments.items():
        if not ok(value):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise InputError(f"{name}= takes {takes}, got {type(value).__name__} {shown}")


def _mode(pairs: object, all_runs: bool, projects: object) -> str:
    chosen = [
        mode
        for mode, given in (
            (PAIRS, pairs is not None),
            (ALL, bool(all_runs)),
            (PROJECTS, projects is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        error = InputError(
            "say which runs to export: pairs= (a pairs file or a list of "
            "(project_id, run_name) pairs), all_runs=True, or projects=[...]; "
            "exactly one of them"
        )
        error.cli_message = (
            "say which runs to export: --pairs FILE, --all, or --project ID "
            "(repeatable); exactly one of them"
        )
        raise error
    return chosen[0]


def _collect_pairs(pairs: object) -> Any:
    from .pairs import collect_given_pairs, collect_pairs

    if isinstance(pairs, str | os.PathLike):
        return collect_pairs(pairs)
    if isinstance(pairs, bytes) or not isinstance(pairs, Iterable):
        raise InputError(
            'pairs must be a path, "-" for stdin, or an iterable of '
            f"(project_id, run_name) pairs, got {type(pairs).__name__}"
        )
    return collect_given_pairs(pairs)


def _pairs_file(pairs: object) -> str | None:
    return display_name(pairs) if isinstance(pairs, str | os.PathLike) else None


def _open_warehouse(
    settings: Settings, cleanup: contextlib.ExitStack, dry_run: bool = False
) -> Warehouse:
    """The warehouse of ``settings`` (reachable and writable, with a ``table`` nsml-etl may
    write), closed with ``cleanup``; a dry run's creates nothing."""
    from .warehouse import DRY_RUN, WRITE, Warehouse

    return cleanup.enter_context(Warehouse.open(settings, DRY_RUN if dry_run else WRITE))


def _finishing(warehouse: Warehouse) -> Callable[[ExportReport], None]:
    """What an export or load does once its runs are committed: create the reporting views
    the database lacks (BI tools find them after the first export) and count the GPU servers
    without a GPU count, for the summary. A database error here is said in the summary and
    the batch_finished event; it fails neither the batch nor the exit code, since the runs
    landed (``nsml-etl views`` says the error again, with exit 4)."""

    def finish(report: ExportReport) -> None:
        from .errors import DatabaseError
        from .reporting.views import create_missing_views

        try:
            report.views_created = len(create_missing_views(warehouse))
        except DatabaseError as exc:
            report.views_error = str(exc)
        with contextlib.suppress(DatabaseError):  # a count only: the note is left out
            report.servers_without_gpus = warehouse.count_servers_without_gpus(
                warehouse.schema.table_name
            )

    return finish


def _archive(save_raw: str | os.PathLike[str] | None, cleanup: contextlib.ExitStack) -> Any:
    if not save_raw:
        return None
    from .archive import ArchiveWriter

    archive = ArchiveWriter(Path(save_raw))
    cleanup.callback(archive.close)
    return archive


def _skipped(skip: set[Any], given: Any, project_ids: list[str] | None) -> int:
    """How many runs ``skip`` (the stored finished ones) leaves out of those asked for: of the
    pairs given, or of the projects, or all of them."""
    if given is not None:
        return sum(1 for pair in given if pair in skip)
    if project_ids is not None:
        return sum(1 for pair in skip if pair.project_id in project_ids)
    return len(skip)


def _dry_run_report(
    settings: Settings,
    mode: str,
    given: Any,
    project_ids: list[str] | None,
    skipped: int | None = None,
) -> ExportReport:
    """With ``skipped`` (``--skip-finished``): how many stored runs it would skip."""
    report = ExportReport(mode=mode, projects=project_ids, settings=settings, dry_run=True)
    report.skip_finished, report.skipped = skipped is not None, skipped or 0
    if given is not None:
        report.requested = len(given)
        report.preview = list(itertools.islice(given, PREVIEW_PAIRS))
    return report


def _commit_before_interrupts(
    work: Callable[[], T], stop: threading.Event, cancel: threading.Event
) -> T:
    """Run ``work`` (fetching and committing) on a thread of its own and wait for it.

    An exception raised in the waiting thread (KeyboardInterrupt, or a host's signal handler
    raising) sets ``stop``, a second one ``cancel``; it is re-raised once ``work`` has committed
    what it fetched. An error of ``work`` itself wins: it says why nothing more was committed."""
    outcome: dict[str, Any] = {}
    # Waited on rather than the thread: a Thread.join interrupted by Ctrl-C can take the lock
    # the running thread holds for itself and mark it stopped (CPython 3.11's handling of
    # bpo-45274), and the commit would be left behind.
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the calling thread below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="nsml-etl").start()
    interrupt: BaseException | None = None
    while True:
        try:  # the whole wait, its test included: an interrupt may land on any bytecode
            if done.wait(WAIT_SLICE_S):
                break
        except BaseException as exc:
            if interrupt is None:
                interrupt = exc
                stop.set()
            else:
                cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    if interrupt is not None:
        raise interrupt
    return outcome["result"]
