"""The report's sections (`nsml-etl report`): what each one shows, read from the reporting
views and summed up here, as :class:`Table` objects that ``report_formats`` and ``report_html``
render.

Every section is a :class:`Table` with a name (the view it shows, e.g. ``nsml_gpu_usage``, or a
name of its own for what the report adds up: ``headline``, ``runs_by_project``, the analytics
sections): the keys of the JSON report, the names ``--view`` takes and the CSV files'
names. Times are UTC, shown to the second; a table cut short says how many rows it has."""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError, InputError
from ..tablenames import FILE_PREFIX, view_bases, view_name
from ..transform import RUN_FAILED, RUN_STATUSES
from ..warehouse import Warehouse
from ..warehouse.failures import first_line
from .views import create_views, query_view


@dataclass(frozen=True)
class Section:
    name: str  # the view's file name: the same for every --table
    title: str
    order_by: str | None = None
    limit: int | None = None  # rows shown unless --limit says otherwise


SECTIONS = (
    Section("nsml_runs_by_project_status", "Runs by project and status", "runs DESC", 20),
    Section("nsml_active_runs", "Active runs", "create_time DESC, project_id, run_name", 20),
    Section("nsml_gpu_usage", "GPU servers", "runs DESC", 10),
    Section("nsml_image_usage", "Top images", "runs DESC", 10),
    Section("nsml_creator_activity", "Busiest creators", "runs DESC", 10),
    Section("nsml_env_key_catalog", "Env keys in use", "runs DESC, env_key", 20),
    Section("nsml_runs_per_week", "Runs created per week", "week, status", None),
    Section("nsml_status_transitions", "Recent status changes", "changed_at DESC", 20),
    Section("nsml_export_freshness", "Export freshness"),
)
# Sections the report computes from the views, by name (the analytics ones: etl/analytics.py).
HEADLINE = "headline"
HEADLINE_TITLE = "At a glance"
BY_PROJECT = "runs_by_project"
BY_PROJECT_TITLE = "Runs by project"
# runs_by_project's column of runs deleted upstream (marked gone by an export's 404), and the
# series that stands for them in the charts: a run there is in no status's column.
GONE = "gone"
GONE_LABEL = "gone (deleted upstream)"
# Put in front of a status's column name while it is taken (a status called ``runs``).
STATUS_PREFIX = "status_"
ACTIVE = "active_runs"
ACTIVE_TITLE = "Active runs and how long they have run"
ACTIVE_COLUMNS = (
    "project_name",
    "project_id",
    "run_name",
    "status",
    "creator",
    "eng_full_name",
    "created_at",
    "started_at",
    "running_for_h",
)
# The timeline's columns behind ACTIVE_COLUMNS, in their order.
_ACTIVE_FROM_TIMELINE = (
    "project_name",
    "project_id",
    "run_name",
    "final_status",
    "creator",
    "eng_full_name",
    "created_at",
    "active_from",
)
ACTIVE_SHOWN = 20  # rows of active_runs unless --limit says otherwise
PROJECTS_SHOWN = 20  # projects in runs_by_project unless --limit says otherwise
PERIOD = "analytics_period"
BY_PROJECT_HOURS = "run_hours_by_project"
BY_CREATOR_HOURS = "run_hours_by_creator"
HOURS = "run_hours_per_project"
SERVERS = "run_hours_per_gpu_server"
WAITS = "queue_wait_per_week"
WEEKLY_FAILURES = "failure_rate_per_week"
FAILURES = {
    "image": "failure_rate_by_image",
    "gpu_server": "failure_rate_by_gpu_server",
    "creator": "failure_rate_by_creator",
}
MISSING = "nsml_gpu_servers_without_count"
# Every section, in the report's order: what --view accepts.
SECTION_NAMES = (
    HEADLINE,
    BY_PROJECT,
    ACTIVE,
    *(s.name for s in SECTIONS),
    PERIOD,
    BY_PROJECT_HOURS,
    BY_CREATOR_HOURS,
    HOURS,
    SERVERS,
    WAITS,
    WEEKLY_FAILURES,
    *FAILURES.values(),
    MISSING,
)
# "Failed in the last N days" in the headline.
RECENT_DAYS = 7
NO_STATUS = "(no status)"

# Columns that hold a moment (UTC); SQLite hands them over as text.
_TIME_SUFFIXES = ("_at", "_time", "_earliest", "_latest")
_TIME_COLUMNS = frozenset({"last_created", "last_seen", "last_successful_export"})
_TIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?")


def cap_for(default: int | None, limit: int | None) -> int | None:
    """Rows a table shows: its default, or ``--limit`` when given (0: all)."""
    return default if limit is None else (limit or None)


@dataclass
class Table:
    """One section: its rows (values tidied: times as UTC datetimes, decimals as numbers) and,
    when the rows were cut short, ``total``, how many there are."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    total: int | None = None
    # What a column stands for where its name is short (runs_by_project: ``failed`` is
    # ``RUN_STATE_FAILED``), for the HTML page's labels and colours.
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        times = [_is_time_column(c) for c in self.columns]
        self.rows = [
            tuple(_tidy(v, t) for v, t in zip(row, times, strict=True)) for row in self.rows
        ]
        if self.total is None:
            self.total = len(self.rows)

    @property
    def cut(self) -> bool:
        return (self.total or 0) > len(self.rows)

    def limited(self, cap: int | None) -> Table:
        """The first ``cap`` rows (all when ``cap`` is None), remembering how many there are."""
        if cap is None or len(self.rows) <= cap:
            return self
        return Table(
            self.name, self.title, self.columns, self.rows[:cap], len(self.rows), self.labels
        )


def _is_time_column(name: str) -> bool:
    return name.endswith(_TIME_SUFFIXES) or name in _TIME_COLUMNS


def _tidy(value: Any, time_column: bool) -> Any:
    if isinstance(value, Decimal):  # PostgreSQL and MySQL sums and averages
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if time_column and isinstance(value, str) and _TIME_TEXT.fullmatch(value):
        return datetime.fromisoformat(value)
    return value


def section_name(name: str, table: str) -> str:
    """The section ``--view NAME`` asks for: a section's name, or ``table``'s own name of that
    view (``team_a__gpu_usage``); :class:`InputError` listing the names otherwise."""
    for known in SECTION_NAMES:
        if name in (known, view_name(table, known) if known.startswith(FILE_PREFIX) else known):
            return known
    close = difflib.get_close_matches(name, SECTION_NAMES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(f"--view: no section {name!r}; {hint}the sections: {', '.join(SECTION_NAMES)}")


def views_for_reading(warehouse: Warehouse) -> None:
    """Make the warehouse's runs table's reporting views current (created or replaced, cheap,
    so they follow ``sql/``); on a database that refuses writes (a read-only file, a standby),
    read the ones there are: :class:`DatabaseError` only when some are missing."""
    refusal = warehouse.write_refusal()
    if refusal is None:
        create_views(warehouse)
        return
    table = warehouse.schema.table_name
    where = warehouse.description
    try:
        existing = set(sa.inspect(warehouse.engine).get_view_names())
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading the views of {where} failed: {first_line(exc)}") from None
    missing = [name for name in (view_name(table, b) for b in view_bases()) if name not in existing]
    if missing:
        raise DatabaseError(
            f"{where} is read-only ({refusal}) and has no view {', '.join(missing)} to read; "
            "run nsml-etl views once where it is writable"
        )


def _count(engine: Engine, name: str) -> int:
    quote = engine.dialect.identifier_preparer.quote
    sql = f"SELECT COUNT(*) FROM {quote(name)}"  # noqa: S608 - a name from our own sql/ files
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def _read(engine: Engine, table: str, section: Section, limit: int | None) -> Table:
    name = view_name(table, section.name)
    cap = cap_for(section.limit, limit)
    columns, rows = query_view(engine, name, section.order_by, cap)
    total = _count(engine, name) if cap is not None and len(rows) >= cap else len(rows)
    return Table(section.name, section.title, columns, rows, total)


def collect(engine: Engine, table: str, limit: int | None, now: datetime) -> list[Table]:
    """The headline, runs by project and each view's section, read from ``table``'s own views;
    ``limit`` rows per table (None: each section's default; 0: all); ``now`` (naive UTC, the
    exporter's clock: :func:`etl.clock.utc_now`) is when "failed in the last 7 days" ends."""
    sections = [_read(engine, table, section, limit) for section in SECTIONS]
    by_name = {t.name: t for t in sections}
    projects = runs_by_project(query_view(engine, view_name(table, SECTIONS[0].name))[1])
    failed = _failed_since(engine, table, now - timedelta(days=RECENT_DAYS))
    freshness = by_name["nsml_export_freshness"]
    last_export = (
        freshness.rows[0][freshness.columns.index("last_successful_export")]
        if freshness.rows
        else None
    )
    headline = Table(
        HEADLINE,
        HEADLINE_TITLE,
        [
            "runs",
            "active_runs",
            f"failed_last_{RECENT_DAYS}_days",
            "projects",
            "last_successful_export",
        ],
        [
            (
                sum(row[2] for row in projects.rows),
                by_name["nsml_active_runs"].total,
                failed,
                len(projects.rows),
                last_export,
            )
        ],
    )
    return [
        headline,
        projects.limited(cap_for(PROJECTS_SHOWN, limit)),
        active_runs(engine, table, now, cap_for(ACTIVE_SHOWN, limit)),
        *sections,
    ]


def status_column(status: str, taken: set[str]) -> str:
    """The column of ``status`` in runs_by_project: a documented status by its short name
    (``RUN_STATE_COMPLETED`` -> ``completed``), runs without one ``no_status``, any other status
    as written; ``status_`` goes in front until the name is not in ``taken`` (the fixed columns
    and the statuses before it), so a status called ``runs`` never overwrites the run count."""
    if status == NO_STATUS:
        name = "no_status"
    elif status in RUN_STATUSES:
        name = status.removeprefix("RUN_STATE_").lower()
    else:
        name = status
    while name in taken:
        name = STATUS_PREFIX + name
    return name


def status_label(status: str) -> str:
    """A status for people: a documented one in words (``RUN_STATE_IN_PROGRESS`` -> ``in
    progress``), any other as written (one called ``gone`` too: runs deleted upstream are
    :data:`GONE_LABEL`, a series of their own)."""
    if status in RUN_STATUSES:
        return status.removeprefix("RUN_STATE_").lower().replace("_", " ")
    return status


def in_status_order(found: set[str]) -> list[str]:
    """The documented statuses among ``found`` in a run's order, then any others by name, then
    :data:`NO_STATUS` (runs without one)."""
    others = sorted(found - set(RUN_STATUSES) - {NO_STATUS})
    return [s for s in RUN_STATUSES if s in found] + others + [NO_STATUS] * (NO_STATUS in found)


def runs_by_project(rows: Iterable[tuple[Any, ...]]) -> Table:
    """One row per project (most runs first): its name and id, its runs, its runs in each
    status (a column per status found; the documented ones in a run's order), and its runs
    deleted upstream (``gone``: counted there, whatever their last status, never in it)."""
    counts: dict[Any, dict[str, int]] = defaultdict(dict)
    gone: dict[Any, int] = defaultdict(int)
    names: dict[Any, Any] = {}
    for project_id, project_name, status, deleted, runs in rows:
        names[project_id] = names.get(project_id) or project_name
        per = counts[project_id]
        if int(deleted):
            gone[project_id] += int(runs)
            continue
        status = status if status is not None else NO_STATUS
        per[status] = per.get(status, 0) + int(runs)
    statuses = in_status_order({s for per in counts.values() for s in per})
    fixed = ["project_name", "project_id", "runs", GONE]
    taken = set(fixed)
    columns = []
    for status in statuses:
        columns.append(status_column(status, taken))
        taken.add(columns[-1])
    totals = {p: sum(per.values()) + gone[p] for p, per in counts.items()}
    ordered = sorted(counts, key=lambda p: (-totals[p], str(names[p] or ""), p))
    return Table(
        BY_PROJECT,
        BY_PROJECT_TITLE,
        [*fixed[:3], *columns, GONE],
        [
            (
                names[project],
                project,
                totals[project],
                *(counts[project].get(s, 0) for s in statuses),
                gone[project],
            )
            for project in ordered
        ],
        labels={**dict(zip(columns, statuses, strict=True)), GONE: GONE},
    )


def active_runs(engine: Engine, table: str, now: datetime, cap: int | None) -> Table:
    """Runs neither finished nor gone, as nsml_active_runs has them, with when each started
    (the timeline's ``active_from``: where its run-hours start) and for how long it has run
    up to ``now``, the longest first; runs not started yet (waiting) after them, the oldest
    first."""
    timeline = sa.table(
        view_name(table, "nsml_run_timeline"),
        *(sa.column(c) for c in (*_ACTIVE_FROM_TIMELINE, "finished", "gone_at")),
    )
    query = sa.select(*(timeline.c[c] for c in _ACTIVE_FROM_TIMELINE)).where(
        timeline.c.finished == 0, timeline.c.gone_at.is_(None)
    )
    try:
        with engine.connect() as conn:
            found = [tuple(row) for row in conn.execute(query)]
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading the active runs failed: {first_line(exc)}") from None
    rows = []
    for name, project, run, status, creator, server, created, started in found:
        created, started = _tidy(created, True), _tidy(started, True)
        running = None if started is None else max(0.0, (now - started).total_seconds())
        rows.append(
            (name, project, run, status, creator, server, created, started, _in_hours(running))
        )
    rows.sort(key=lambda r: (r[7] is None, r[7] or r[6] or datetime.max, r[1], r[2]))
    return Table(ACTIVE, ACTIVE_TITLE, list(ACTIVE_COLUMNS), rows).limited(cap)


def _in_hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def _failed_since(engine: Engine, table: str, since: datetime) -> int:
    """Runs that ended FAILED at or after ``since``, by the timeline's estimate of their end."""
    timeline = sa.table(
        view_name(table, "nsml_run_timeline"), sa.column("final_status"), sa.column("ended_at")
    )
    query = sa.select(timeline.c.ended_at).where(timeline.c.final_status == RUN_FAILED)
    with engine.connect() as conn:
        ends = [_tidy(end, True) for end in conn.execute(query).scalars()]
    return sum(1 for end in ends if isinstance(end, datetime) and end >= since)


# -- text, CSV, JSON ----------------------------------------------------------------------

# Characters that would move the cursor or turn text around on a terminal: shown as escapes.
