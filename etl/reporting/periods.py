"""Exact periods in a time zone: run-hours clipped to days, weeks or months as a team sees them.

``report --since DAY --until DAY --timezone ZONE`` counts exactly ``[since 00:00, until + 1
00:00)`` in ``ZONE``, and ``--period day|week|month`` cuts that into the zone's days, Monday
weeks or calendar months. Boundaries come from :mod:`zoneinfo`, so a day across a daylight
saving change has its 23 or 25 hours; the clipping is done here, in Python, over the spans of
``nsml_run_timeline`` (``active_from`` to ``active_until``), because SQLite has no time zones
and MariaDB's ``CONVERT_TZ`` needs time zone tables that are rarely loaded: the same history
gives the same hours on every database.

Durations are summed in whole milliseconds (the timeline's resolution on every database, see
:mod:`etl.warehouse.dialects`), so no float drift separates two databases either.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAY, WEEK, MONTH = "day", "week", "month"
UNITS = (DAY, WEEK, MONTH)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Unit:
    """One day, week or month of a period (cut to the period at its ends): its first and last
    local day, and where it starts and ends in naive UTC."""

    first_day: date
    last_day: date
    start: datetime
    end: datetime


def local_midnight(day: date, zone: str) -> datetime:
    """00:00 of ``day`` in ``zone`` as naive UTC (where a zone skips midnight, the moment its
    clock would have shown it by the offset before the change: zoneinfo's ``fold=0``)."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)


def _next_start(day: date, unit: str | None, until: date) -> date:
    """The first day of the unit after the one ``day`` is in (the day after ``until`` at most)."""
    if unit == DAY:
        following = day + timedelta(days=1)
    elif unit == WEEK:
        following = day + timedelta(days=7 - day.weekday())
    elif unit == MONTH:
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        following = until + timedelta(days=1)
    return min(following, until + timedelta(days=1))


def units(since: date, until: date, zone: str, unit: str | None) -> list[Unit]:
    """The units of ``[since, until]`` in ``zone``, in order; one for the whole period when
    ``unit`` is None."""
    found = []
    day = since
    while day <= until:
        following = _next_start(day, unit, until)
        found.append(
            Unit(
                day,
                following - timedelta(days=1),
                local_midnight(day, zone),
                local_midnight(following, zone),
            )
        )
        day = following
    return found


def as_moment(value: Any) -> datetime | None:
    """A timeline time (a datetime, or text on SQLite) as naive UTC."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Span:
    """One run's counted time (``active_from`` to ``active_until``) and what it is charged to."""

    start: datetime
    end: datetime
    fields: dict[str, Any]


def spans(rows: Iterable[dict[str, Any]]) -> Iterator[Span]:
    """The timeline rows that have a span of run time."""
    for row in rows:
        start, end = as_moment(row["active_from"]), as_moment(row["active_until"])
        if start is not None and end is not None and end > start:
            yield Span(start, end, row)


def clipped(span: Span, period_units: list[Unit]) -> Iterator[tuple[int, int]]:
    """(index of the unit, milliseconds of ``span`` in it) for each unit the span reaches."""
    ends = [u.end for u in period_units]
    index = bisect.bisect_right(ends, span.start)
    while index < len(period_units) and period_units[index].start < span.end:
        unit = period_units[index]
        overlap = min(span.end, unit.end) - max(span.start, unit.start)
        if overlap > timedelta(0):
            yield index, overlap // _MILLISECOND
        index += 1


def hours(milliseconds: int) -> float:
    """Whole milliseconds as hours, to the 0.01 h the report shows."""
    return round(milliseconds / 3_600_000, 2)
