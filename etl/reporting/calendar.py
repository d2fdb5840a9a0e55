"""``nsml_calendar``: where each day starts and ends in UTC, for the views that BI tools read.

SQLite has no time zones and MariaDB's ``CONVERT_TZ`` needs time zone tables that are rarely
loaded, so the day views (``nsml_run_hours_per_day`` in UTC, ``nsml_run_hours_per_local_day``
in the zone the views were made with) join the timeline's spans against this table, written
here with :mod:`zoneinfo`: exact on every database, a day across a daylight saving change
included (23 or 25 hours).

One row per day and scope: ``scope`` 'utc' (``zone`` UTC) or 'local' (``zone`` the views'
zone: ``views --timezone``, kept by every later refresh). The days run from the first moment
stored for the runs table to :data:`DAYS_AHEAD` days after the views were last made; each
refresh adds the days missing, so the table is written in full only once per database.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import DEFAULT_LIST_TIMEZONE
from ..tablenames import BATCHES_TABLE, CALENDAR_TABLE, HISTORY_TABLE
from ..warehouse.tables import UTF8MB4, Name, Timestamp
from .periods import local_midnight

UTC_SCOPE, LOCAL_SCOPE = "utc", "local"
# Days after today the calendar reaches: runs seen until then are counted (a refresh of the
# views, which `report` does too, moves it on).
DAYS_AHEAD = 400


def calendar_table() -> sa.Table:
    return sa.Table(
        CALENDAR_TABLE,
        sa.MetaData(),
        sa.Column("scope", Name, primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("zone", Name, nullable=False),
        sa.Column("start_utc", Timestamp, nullable=False),
        sa.Column("end_utc", Timestamp, nullable=False),
        sa.Index(f"ix_{CALENDAR_TABLE}_start", "scope", "start_utc"),
        **UTF8MB4,
    )


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def first_day(conn: Connection, runs_table: str) -> date | None:
    """The earliest day a span of ``runs_table`` can start: its first creation time, change
    or export (None when nothing is stored)."""
    history = sa.table(HISTORY_TABLE, sa.column("table_name"), sa.column("valid_from"))
    batches = sa.table(BATCHES_TABLE, sa.column("table_name"), sa.column("started_at"))
    runs = sa.table(runs_table, sa.column("create_time"))
    days = [
        _as_date(conn.execute(query).scalar())
        for query in (
            sa.select(sa.func.min(history.c.valid_from)).where(history.c.table_name == runs_table),
            sa.select(sa.func.min(batches.c.started_at)).where(batches.c.table_name == runs_table),
            sa.select(sa.func.min(runs.c.create_time)),
        )
    ]
    known = [d for d in days if d is not None]
    return min(known) if known else None


def _local_zone(conn: Connection, table: sa.Table) -> str | None:
    query = sa.select(table.c.zone).where(table.c.scope == LOCAL_SCOPE).limit(1)
    return conn.execute(query).scalar()


def fill_calendar(conn: Connection, runs_table: str, today: date, zone: str | None = None) -> str:
    """Create the calendar if missing and add the days it lacks for ``runs_table``; ``zone``
    (None: the one it has, or :data:`etl.config.DEFAULT_LIST_TIMEZONE`) is the local scope's
    zone, whose rows are written anew when it changes. Returns the local zone."""
    table = calendar_table()
    table.create(conn, checkfirst=True)
    current = _local_zone(conn, table)
    zone = zone or current or DEFAULT_LIST_TIMEZONE
    if current is not None and current != zone:
        conn.execute(table.delete().where(table.c.scope == LOCAL_SCOPE))
    start = min(first_day(conn, runs_table) or today, today) - timedelta(days=1)
    end = today + timedelta(days=DAYS_AHEAD)
    for scope, scope_zone in ((UTC_SCOPE, "UTC"), (LOCAL_SCOPE, zone)):
        have = {
            _as_date(day)
            for day in conn.execute(
                sa.select(table.c.day).where(
                    table.c.scope == scope, table.c.day >= start, table.c.day <= end
                )
            ).scalars()
        }
        rows = [
            {
                "scope": scope,
                "day": day,
                "zone": scope_zone,
                "start_utc": local_midnight(day, scope_zone),
                "end_utc": local_midnight(day + timedelta(days=1), scope_zone),
            }
            for day in (start + timedelta(days=n) for n in range((end - start).days + 1))
            if day not in have
        ]
        if rows:
            conn.execute(table.insert(), rows)
    return zone
