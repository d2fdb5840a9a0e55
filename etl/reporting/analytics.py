"""The analytics sections of ``nsml-etl report``: run-hours and GPU-hours, queue waits and
failure rates over a period of weeks, read from the analytics views and summed up here.

The views do the estimating (``sql/nsml_run_timeline.sql`` and the weekly views over it); this
module only picks the weeks of the period and adds weeks, projects or servers together, so every
database gives the same report.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError, InputError
from ..tablenames import BATCHES_TABLE, view_name
from ..warehouse.batches import EXPORT_COMMAND, PARTIAL, SUCCEEDED
from ..warehouse.failures import first_line
from .report import (
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
    """Whole weeks (Monday to Sunday, UTC): those that start from ``since``'s Monday up to
    ``until``."""

    since: date
    until: date

    @property
    def first_week(self) -> date:
        return monday(self.since)

    def covers(self, week: date) -> bool:
        return self.first_week <= week <= self.until


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


# The days --since and --until may name: runs carry Unix times (none before 1970), and the day
# after --until, where the period ends, must still be a date (Python's and the databases' end
# with the year 9999): --until 9999-12-31 crashed with OverflowError.
EARLIEST_DAY = date(1970, 1, 1)
LATEST_DAY = date(9998, 12, 31)


def period_for(since: date | None, until: date | None, today: date) -> Period:
    """The period asked for; by default the last :data:`DEFAULT_WEEKS` weeks up to ``today``.
    A day outside :data:`EARLIEST_DAY` to :data:`LATEST_DAY` is an :class:`InputError`."""
    for option, day in (("--since", since), ("--until", until)):
        if day is not None and not EARLIEST_DAY <= day <= LATEST_DAY:
            raise InputError(f"{option} {day}: must be between {EARLIEST_DAY} and {LATEST_DAY}")
    until = until or today
    since = since or monday(until) - timedelta(weeks=DEFAULT_WEEKS - 1)
    if since > until:
        raise InputError(f"--since {since} is after --until {until}; give an earlier --since")
    return Period(since, until)


def as_week(value: Any) -> date:
    """A view's week (a date, or ISO text on SQLite) as a date."""
    return value if type(value) is date else date.fromisoformat(str(value)[:10])


def _number(value: Any) -> float | None:
    return None if value is None else float(value)  # Decimal on PostgreSQL and MySQL


def _hours(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600, 2)


def _records(columns: list[str], rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def hours_per_project(rows: list[dict[str, Any]], period: Period) -> Table:
    """Run-hours per project and week, over all servers; GPU-hours where the server's GPU count
    is known, and the run-hours whose GPU count is not."""
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [None, 0, 0.0, 0.0, 0.0])
    for row in rows:
        week = as_week(row["week"])
        if not period.covers(week):
            continue
        entry = sums[(week, row["project_id"])]
        entry[0] = entry[0] or row["project_name"]
        entry[1] += int(row["active_runs"])
        entry[2] += _number(row["run_hours"]) or 0.0
        if row["gpu_hours"] is None:
            entry[4] += _number(row["run_hours"]) or 0.0
        else:
            entry[3] += float(row["gpu_hours"])
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
            (week, project, name, runs, round(run, 2), round(gpu, 2), round(unknown, 2))
            for (week, project), (name, runs, run, gpu, unknown) in sorted(
                sums.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ],
    )


def hours_per_server(rows: list[dict[str, Any]], period: Period) -> Table:
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [None, 0.0, 0.0])
    for row in rows:
        if not period.covers(as_week(row["week"])):
            continue
        entry = sums[(row["eng_full_name"], row["gpu_svr_code"])]
        entry[0] = row["gpus"] if row["gpus"] is not None else entry[0]
        entry[1] += _number(row["run_hours"]) or 0.0
        entry[2] += _number(row["gpu_hours"]) or 0.0
    ordered = sorted(sums.items(), key=lambda item: -item[1][1])
    return Table(
        SERVERS,
        TITLES[SERVERS],
        ["eng_full_name", "gpu_svr_code", "gpus", "run_hours", "gpu_hours"],
        [
            (name, code, gpus, round(run, 2), round(gpu, 2) if gpus is not None else None)
            for (name, code), (gpus, run, gpu) in ordered
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
        batches.c.started_at >= datetime.combine(period.first_week, datetime.min.time()),
        batches.c.started_at
        < datetime.combine(period.until + timedelta(days=1), datetime.min.time()),
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

    hours = read("nsml_run_hours_per_week")
    rates = read("nsml_failure_rates_per_week")
    missing_columns, missing = query_view(
        engine, view_name(table, "nsml_gpu_servers_without_count"), "runs DESC, gpu_svr_code"
    )
    interval = export_interval_hours(_export_starts(engine, table, period))
    tables = [
        Table(
            PERIOD,
            TITLES[PERIOD],
            ["since", "until", "export_interval_h", "estimates"],
            [(period.first_week, period.until, interval, PRECISION)],
        ),
        hours_per_project(hours, period),
        hours_per_server(hours, period),
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
