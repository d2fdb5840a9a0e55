"""The analytics sections of ``nsml-etl report``: run-hours, GPU-hours and node-hours over an
exact period in a time zone, and queue waits and failure rates by week, read from the analytics
views and summed up here.

The views do the estimating (``sql/nsml_run_timeline.sql`` and the weekly views over it). The
hours are the timeline's spans clipped here to the period's days, weeks or months in the zone
(:mod:`etl.reporting.periods`: exact, daylight saving time included, the same on every
database); queue waits and failure rates are the weekly views' rows (UTC Monday weeks) of the
weeks that overlap the period.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError, InputError
from ..tablenames import BATCHES_TABLE, view_name
from ..warehouse.batches import EXPORT_COMMAND, PARTIAL, SUCCEEDED
from ..warehouse.failures import first_line
from ..warehouse.gpuservers import list_servers
from .periods import UNITS, WEEK, Span, Unit, clipped, hours, local_midnight, spans, units
from .report import (
    BY_CREATOR_HOURS,
    BY_PROJECT_HOURS,
    FAILURES,
    HOURS,
    MISSING,
    PERIOD,
    SERVERS,
    WAITS,
    WEEKLY_FAILURES,
    Table,
    cap_for,
    collect,
)
from .views import query_view

# The report's default period: the current week and the seven before it.
DEFAULT_WEEKS = 8
# Rows shown per failure-rate table (the worst first) unless --limit says otherwise.
TOP_FAILURES = 15
# The sections' titles, by name (the names: etl/report.py).
TITLES = {
    PERIOD: "Analytics period",
    BY_PROJECT_HOURS: "Run-hours, GPU-hours and node-hours per project",
    BY_CREATOR_HOURS: "Run-hours, GPU-hours and node-hours per creator",
    HOURS: "Run-hours and GPU-hours per project and week",
    SERVERS: "Run-hours per GPU server",
    WAITS: "Queue wait per week",
    WEEKLY_FAILURES: "Failure rate per week",
    FAILURES["image"]: "Failure rate by image",
    FAILURES["gpu_server"]: "Failure rate by GPU server",
    FAILURES["creator"]: "Failure rate by creator",
    MISSING: "GPU servers without a GPU count",
}
ALL_PROJECTS = "(all projects)"
# How good the times are (they are estimated from exports; nsml_run_timeline has the bounds).
PRECISION = "good to about one export interval"


@dataclass(frozen=True)
class Period:
    """Exactly ``[since 00:00, until + 1 day 00:00)`` in ``zone``; ``unit`` (day, week or
    month, None for the whole period) is what the per-project and per-creator hours are cut
    into."""

    since: date
    until: date
    zone: str = "UTC"
    unit: str | None = None

    @property
    def start(self) -> datetime:
        """Where the period starts, in naive UTC."""
        return local_midnight(self.since, self.zone)

    @property
    def end(self) -> datetime:
        """Where it ends (excluded), in naive UTC."""
        return local_midnight(self.until + timedelta(days=1), self.zone)

    def covers(self, week: date) -> bool:
        """Whether the weekly views' week (a UTC Monday) overlaps the period."""
        return week <= self.until and week + timedelta(days=6) >= self.since

    def units(self, unit: str | None) -> list[Unit]:
        return units(self.since, self.until, self.zone, unit)


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


# The days --since and --until may name: runs carry Unix times (none before 1970), and the day
# after --until, where the period ends, must still be a date (Python's and the databases' end
# with the year 9999): --until 9999-12-31 crashed with OverflowError.
EARLIEST_DAY = date(1970, 1, 1)
LATEST_DAY = date(9998, 12, 31)


def period_for(
    since: date | None,
    until: date | None,
    today: date,
    zone: str = "UTC",
    unit: str | None = None,
) -> Period:
    """The period asked for, in ``zone``; by default from the Monday :data:`DEFAULT_WEEKS` - 1
    weeks before ``until``'s week (``today``, the zone's, by default). A day outside
    :data:`EARLIEST_DAY` to :data:`LATEST_DAY`, or a ``unit`` not in
    :data:`etl.reporting.periods.UNITS`, is an :class:`InputError`."""
    for option, day in (("--since", since), ("--until", until)):
        if day is not None and not EARLIEST_DAY <= day <= LATEST_DAY:
            raise InputError(f"{option} {day}: must be between {EARLIEST_DAY} and {LATEST_DAY}")
    if unit is not None and unit not in UNITS:
        raise InputError(f"--period {unit}: must be one of {', '.join(UNITS)}")
    until = until or today
    since = since or monday(until) - timedelta(weeks=DEFAULT_WEEKS - 1)
    if since > until:
        raise InputError(f"--since {since} is after --until {until}; give an earlier --since")
    return Period(since, until, zone, unit)


def local_today(now: datetime, zone: str) -> date:
    """The day it is in ``zone`` at ``now`` (naive UTC)."""
    from zoneinfo import ZoneInfo

    return now.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).date()


def as_week(value: Any) -> date:
    """A view's week (a date, or ISO text on SQLite) as a date."""
    return value if type(value) is date else date.fromisoformat(str(value)[:10])


def _number(value: Any) -> float | None:
    return None if value is None else float(value)  # Decimal on PostgreSQL and MySQL


def _hours(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600, 2)


def _records(columns: list[str], rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


@dataclass
class _Sum:
    """Milliseconds charged to one project, creator or server in one unit of the period."""

    name: Any = None
    runs: int = 0
    run_ms: int = 0
    gpu_ms: int = 0
    gpu_known: bool = False
    node_ms: int = 0
    unknown_ms: int = 0  # run time on servers without a GPU count

    def charge(self, milliseconds: int, gpus: int | None, nodes: int) -> None:
        self.runs += 1
        self.run_ms += milliseconds
        self.node_ms += milliseconds * nodes
        if gpus is None:
            self.unknown_ms += milliseconds
        else:
            self.gpu_ms += milliseconds * gpus * nodes
            self.gpu_known = True


def _nodes(value: Any) -> int:
    """The timeline's node count (``nodes``: 1 when unknown) as an int of at least 1."""
    return max(int(value), 1) if value is not None else 1


def _sums(
    timeline: list[Span],
    gpus: dict[int, int],
    period_units: list[Unit],
    key: Callable[[dict[str, Any]], Any],
) -> dict[tuple[int, Any], _Sum]:
    """Each span's time in each unit, charged to ``key`` of its row: {(unit index, key): sum}."""
    sums: dict[tuple[int, Any], _Sum] = defaultdict(_Sum)
    for span in timeline:
        code = span.fields.get("gpu_svr_code")
        count = gpus.get(int(code)) if code is not None else None
        nodes = _nodes(span.fields.get("nodes"))
        for index, milliseconds in clipped(span, period_units):
            entry = sums[(index, key(span.fields))]
            entry.name = entry.name or span.fields.get("project_name")
            entry.charge(milliseconds, count, nodes)
    return sums


def _gpu_hours(entry: _Sum) -> float | None:
    return hours(entry.gpu_ms) if entry.gpu_known else None


def hours_per_project(timeline: list[Span], gpus: dict[int, int], period: Period) -> Table:
    """Run-hours per project and week (Monday to Sunday in the period's zone, cut to the
    period); GPU-hours where the server's GPU count is known, and the run-hours whose GPU
    count is not."""
    weeks = period.units(WEEK)
    sums = _sums(timeline, gpus, weeks, lambda row: row["project_id"])
    return Table(
        HOURS,
        TITLES[HOURS],
        [
            "week",
            "project_id",
            "project_name",
            "active_runs",
            "run_hours",
            "gpu_hours",
            "run_hours_without_gpu_count",
        ],
        [
            (
                weeks[index].first_day,
                project,
                entry.name,
                entry.runs,
                hours(entry.run_ms),
                hours(entry.gpu_ms),
                hours(entry.unknown_ms),
            )
            for (index, project), entry in sorted(
                sums.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ],
    )


def hours_by(timeline: list[Span], gpus: dict[int, int], period: Period, dimension: str) -> Table:
    """Run-hours, GPU-hours (NULL where no server's GPU count is known) and node-hours per
    ``dimension`` (project or creator) in each unit of the period (the whole period when it
    has no unit), the most run-hours first."""
    period_units = period.units(period.unit)
    key = "project_id" if dimension == "project" else "creator"
    sums = _sums(timeline, gpus, period_units, lambda row: row[key])
    name = BY_PROJECT_HOURS if dimension == "project" else BY_CREATOR_HOURS
    who = ["project_id", "project_name"] if dimension == "project" else ["creator"]
    ordered = sorted(
        sums.items(), key=lambda item: (item[0][0], -item[1].run_ms, str(item[0][1] or ""))
    )
    return Table(
        name,
        TITLES[name],
        ["period_start", "period_end", *who, "run_hours", "gpu_hours", "node_hours"],
        [
            (
                period_units[index].first_day,
                period_units[index].last_day,
                *((value, entry.name) if dimension == "project" else (value,)),
                hours(entry.run_ms),
                _gpu_hours(entry),
                hours(entry.node_ms),
            )
            for (index, value), entry in ordered
        ],
    )


def hours_per_server(timeline: list[Span], gpus: dict[int, int], period: Period) -> Table:
    """Run-hours and GPU-hours per GPU server over the whole period."""
    whole = period.units(None)
    sums = _sums(timeline, gpus, whole, lambda row: (row["eng_full_name"], row["gpu_svr_code"]))
    ordered = sorted(sums.items(), key=lambda item: (-item[1].run_ms, str(item[0][1])))
    return Table(
        SERVERS,
        TITLES[SERVERS],
        ["eng_full_name", "gpu_svr_code", "gpus", "run_hours", "gpu_hours"],
        [
            (
                name,
                code,
                gpus.get(int(code)) if code is not None else None,
                hours(entry.run_ms),
                _gpu_hours(entry),
            )
            for (_, (name, code)), entry in ordered
        ],
    )


def queue_waits(rows: list[dict[str, Any]], period: Period) -> Table:
    """The view's medians and 90th percentiles, in hours, all projects first in each week."""
    picked = [r for r in rows if period.covers(as_week(r["week"]))]
    picked.sort(
        key=lambda r: (
            as_week(r["week"]),
            r["project_id"] is not None,
            r["project_name"] or "",
            r["project_id"] or "",
        )
    )
    return Table(
        WAITS,
        TITLES[WAITS],
        ["week", "project_id", "project_name", "runs", "median_wait_h", "p90_wait_h"],
        [
            (
                as_week(r["week"]),
                r["project_id"],
                r["project_name"] if r["project_id"] is not None else ALL_PROJECTS,
                int(r["runs"]),
                _hours(r["median_wait_s"]),
                _hours(r["p90_wait_s"]),
            )
            for r in picked
        ],
    )


def failure_rates(rows: list[dict[str, Any]], period: Period, dimension: str) -> Table:
    """Failed / finished over the period for each value of one dimension, most failures
    first (then the highest rate); every value (the report shows the first few)."""
    sums: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["dimension"] == dimension and period.covers(as_week(row["week"])):
            sums[row["value"]][0] += int(row["finished"])
            sums[row["value"]][1] += int(row["failed"])
    ordered = sorted(
        sums.items(), key=lambda item: (-item[1][1], -item[1][1] / item[1][0], str(item[0]))
    )
    return Table(
        FAILURES[dimension],
        TITLES[FAILURES[dimension]],
        [dimension, "finished", "failed", "failure_rate"],
        [
            (value, finished, failed, round(failed / finished, 4))
            for value, (finished, failed) in ordered
        ],
    )


def weekly_failures(rows: list[dict[str, Any]], period: Period) -> Table:
    """Failed / finished per week, all runs (each run counts once: the image dimension)."""
    sums: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        week = as_week(row["week"])
        if row["dimension"] == "image" and period.covers(week):
            sums[week][0] += int(row["finished"])
            sums[week][1] += int(row["failed"])
    return Table(
        WEEKLY_FAILURES,
        TITLES[WEEKLY_FAILURES],
        ["week", "finished", "failed", "failure_rate"],
        [
            (week, finished, failed, round(failed / finished, 4))
            for week, (finished, failed) in sorted(sums.items())
        ],
    )


def export_interval_hours(starts: list[datetime]) -> float | None:
    """The median time between consecutive exports, in hours: how precise the estimates are."""
    starts = sorted(starts)
    gaps = [(b - a).total_seconds() / 3600 for a, b in zip(starts, starts[1:], strict=False)]
    return round(statistics.median(gaps), 2) if gaps else None


def _export_starts(engine: Engine, table: str, period: Period) -> list[datetime]:
    batches = sa.table(
        BATCHES_TABLE,
        sa.column("table_name"),
        sa.column("command"),
        sa.column("status"),
        sa.column("started_at", sa.DateTime()),
    )
    query = sa.select(batches.c.started_at).where(
        batches.c.table_name == table,
        batches.c.command == EXPORT_COMMAND,
        batches.c.status.in_((SUCCEEDED, PARTIAL)),
        batches.c.started_at >= period.start,
        batches.c.started_at < period.end,
    )
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading {BATCHES_TABLE} failed: {first_line(exc)}") from exc


def collect_analytics(
    engine: Engine, table: str, period: Period, limit: int | None = None
) -> list[Table]:
    """The analytics sections of ``table`` for ``period`` (its views must exist), ``limit``
    rows each (None: all, and :data:`TOP_FAILURES` of each failure rate; 0: all)."""

    def read(base: str) -> list[dict[str, Any]]:
        return _records(*query_view(engine, view_name(table, base)))

    timeline = list(spans(read("nsml_run_timeline")))
    gpus = {server.gpu_svr_code: server.gpus for server in list_servers(engine, table)[0]}
    rates = read("nsml_failure_rates_per_week")
    missing_columns, missing = query_view(
        engine, view_name(table, "nsml_gpu_servers_without_count"), "runs DESC, gpu_svr_code"
    )
    interval = export_interval_hours(_export_starts(engine, table, period))
    tables = [
        Table(
            PERIOD,
            TITLES[PERIOD],
            ["since", "until", "export_interval_h", "estimates", "timezone", "period"],
            [
                (
                    period.since,
                    period.until,
                    interval,
                    PRECISION,
                    period.zone,
                    period.unit or "whole",
                )
            ],
        ),
        hours_by(timeline, gpus, period, "project"),
        hours_by(timeline, gpus, period, "creator"),
        hours_per_project(timeline, gpus, period),
        hours_per_server(timeline, gpus, period),
        queue_waits(read("nsml_queue_wait_per_week"), period),
        weekly_failures(rates, period),
        *(failure_rates(rates, period, dimension) for dimension in FAILURES),
        Table(MISSING, TITLES[MISSING], missing_columns, missing),
    ]
    failures = set(FAILURES.values())
    return [t.limited(cap_for(TOP_FAILURES if t.name in failures else None, limit)) for t in tables]


def report_sections(
    engine: Engine, table: str, period: Period, limit: int | None, now: datetime
) -> list[Table]:
    """Every section of the report, in its order (:data:`etl.reporting.report.SECTION_NAMES`):
    :func:`etl.reporting.report.collect`'s, then the analytics ones for ``period``; ``limit``
    rows per table (None: each section's default; 0: all)."""
    return collect(engine, table, limit, now) + collect_analytics(engine, table, period, limit)
