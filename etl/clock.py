"""What time it is for the exporter: UTC now, or a fixed simulated moment.

``NSML_ETL_CLOCK`` (an ISO 8601 time) makes every time an export or load records (fetch times,
and so the change history, and the batch times) that moment. It exists for the simulator's
clock (``nsml-etl simulate --clock``), so that a demo or a test can run exports at successive
simulated moments; it has no place next to the real API. Request signatures always use the
real clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from .errors import InputError

CLOCK_ENV = "NSML_ETL_CLOCK"


def parse_moment(text: str, what: str) -> datetime:
    """An ISO 8601 time as naive UTC (a time without a zone is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{what}: {text!r} is not a time; use ISO 8601, e.g. 2026-01-05T09:00:00Z"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def clock_override() -> datetime | None:
    """The moment ``NSML_ETL_CLOCK`` fixes, or None when it is unset or empty."""
    value = os.environ.get(CLOCK_ENV)
    return parse_moment(value, CLOCK_ENV) if value else None


def utc_now() -> datetime:
    """Naive UTC: what every timestamp column holds."""
    return clock_override() or datetime.now(UTC).replace(tzinfo=None)
