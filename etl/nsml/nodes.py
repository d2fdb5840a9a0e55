"""Fetching a run's node list through ``GET /projects/{projectId}/runs/{runName}/nodes``.

It pages like the run list (see :mod:`etl.nsml.discovery`): its largest page size is not
documented and a gateway may return fewer nodes than asked for, so only an empty page ends the
list, and a node that shows up on two pages is kept once. Each page is a signed, retried request
of the run's client (throttle, quota guard and watchdog included). A list that cannot be read to
its end is :class:`~nsml_etl.errors.RunFetchFailed` naming the page, and no node of it is kept:
a part of a list would remove the nodes it did not reach.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ApiError, RunFetchFailed, RunShapeError
from ..model import FlatNode, Pair
from ..nodelist import flatten_pages, page_items
from .client import NsmlClient

# The run list's page size (discovery.LIST_PAGE_SIZE): nearly every run fits in one page, and
# the empty page that ends its list is the second request.
NODE_PAGE_SIZE = 100
# A guard against a gateway that never returns an empty page: 1000 x 100 nodes for one run.
MAX_NODE_PAGES = 1000


@dataclass
class NodeList:
    """A run's nodes, and the pages as received (for the raw archive)."""

    nodes: list[FlatNode]
    pages: list[bytes]
    attempts: int


def fetch_node_list(client: NsmlClient, pair: Pair, page_size: int = NODE_PAGE_SIZE) -> NodeList:
    """Every node of ``pair``'s run, page by page; RunFetchFailed when the list cannot be read
    to its end (its message names the page), AuthenticationError, QuotaExhausted or Aborted as
    any request of the export."""
    bodies, pages, attempts = [], [], 0
    for page in range(1, MAX_NODE_PAGES + 1):
        try:
            result = client.list_nodes(pair, page, page_size)
        except ApiError as exc:
            failed = ApiError(
                f"node list page {page}: {exc.message}",
                status=exc.status,
                error_code=exc.error_code,
            )
            raise RunFetchFailed(pair, failed, attempts + exc.attempts) from None
        attempts += result.attempts
        try:
            items = page_items(result.body, page)
        except RunShapeError as exc:
            unusable = ApiError(f"unusable response: {exc}", 200)
            raise RunFetchFailed(pair, unusable, attempts) from None
        bodies.append(result.body)
        pages.append(result.raw)
        if not items:
            try:
                return NodeList(flatten_pages(bodies), pages, attempts)
            except RunShapeError as exc:
                raise RunFetchFailed(
                    pair, ApiError(f"unusable response: {exc}", 200), attempts
                ) from None
    raise RunFetchFailed(
        pair, ApiError(f"node list did not end after {MAX_NODE_PAGES} pages", 200), attempts
    )
