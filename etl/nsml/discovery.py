"""Run discovery through ``GET /projects/runs``.

The list has no total count and its largest page size is undocumented, and a gateway may return
fewer items than asked for, so only an empty page ends the listing. Runs are listed newest
first; one created while we page shifts the rest by one, so a run can appear on two pages: it is
yielded once. The list's ``createTime``/``updateTime`` carry no zone; they are read in the
configured zone (``list_timezone``, default Asia/Seoul, NCP's home) and stored as UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from ..config import DEFAULT_LIST_TIMEZONE
from ..errors import ApiError, DiscoveryError
from ..model import Pair, RunToFetch
from ..pairs import named_pair
from .client import NsmlClient

log = logging.getLogger("nsml_etl.discovery")  # its name before the sub-packages

# The page size the API docs show; a gateway may cap it lower, which only costs more pages.
LIST_PAGE_SIZE = 100
# A guard against a gateway that never returns an empty page (or loops): 100 x 100,000 runs.
MAX_PAGES = 100_000
LIST_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_list_time(value: object, zone: ZoneInfo) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` in ``zone`` -> naive UTC; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        local = datetime.strptime(value.strip(), LIST_TIME_FORMAT).replace(tzinfo=zone)
    except ValueError:
        return None
    return local.astimezone(UTC).replace(tzinfo=None)


def _listed(summary: object, zone: ZoneInfo) -> RunToFetch | None:
    if not isinstance(summary, dict) or (pair := named_pair(summary)) is None:
        return None
    status = summary.get("status")
    return RunToFetch(
        pair,
        status if isinstance(status, str) else None,
        parse_list_time(summary.get("createTime"), zone),
        parse_list_time(summary.get("updateTime"), zone),
    )


def discover_runs(
    client: NsmlClient,
    *,
    projects: Iterable[str] | None = None,
    timezone: str = DEFAULT_LIST_TIMEZONE,
    page_size: int = LIST_PAGE_SIZE,
) -> Iterator[RunToFetch]:
    """Every run the key can see (or of ``projects``), each once, page by page."""
    zone = ZoneInfo(timezone)
    wanted = set(projects) if projects else None
    seen: set[Pair] = set()
    for page in range(1, MAX_PAGES + 1):
        try:
            body = client.list_runs(page, page_size).body
        except ApiError as exc:
            raise DiscoveryError(f"run list page {page}: {exc.message}") from None
        items = body.get("runList") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise DiscoveryError(f"run list page {page}: expected an object with runList")
        if not items:
            log.info("run list ended after %d pages, %d runs", page - 1, len(seen))
            return
        for summary in items:
            run = _listed(summary, zone)
            if run is None:
                log.warning("run list page %d: skipped an entry without projectId/runName", page)
                continue
            if run.pair in seen or (wanted is not None and run.pair.project_id not in wanted):
                continue
            seen.add(run.pair)
            yield run
    raise DiscoveryError(f"run list did not end after {MAX_PAGES} pages")


def then_unlisted(listed: Iterable[RunToFetch], stored: set[Pair]) -> Iterator[RunToFetch]:
    """Every run of ``listed``, then each pair of ``stored`` (runs stored as unfinished) that the
    list did not show: a run deleted upstream drops out of the list, and only Get run's 404
    tells, so it can be marked gone instead of looking alive forever. Nothing is added when
    the list fails part-way (its error ends the iteration)."""
    remaining = set(stored)
    for run in listed:
        remaining.discard(run.pair)
        yield run
    if remaining:
        log.info("%d stored unfinished runs were not listed; fetching them", len(remaining))
    yield from map(RunToFetch, sorted(remaining))
