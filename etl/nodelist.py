"""A run's node list (``GET /projects/{projectId}/runs/{runName}/nodes``) -> flat nodes (pure).

Each page is ``{"nodes": [node, ...], "totalCount": N}``. A node's documented fields become the
columns of ``nsml_run_nodes``; every other field of the node (undocumented ones included) is
kept in its ``fields`` column as a JSON object, so nothing the API sent is lost. ``rank`` and
``exitCode`` are integer columns: a value that is not a whole number leaves the column NULL and
stays in ``fields`` under its own name. Every field is optional except ``nodeId``, the node's
key: a node without one makes the list unusable (the run's node list fails, the run does not).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import jsontext
from .errors import RunShapeError
from .model import FlatNode
from .transform import as_integer, as_text

NODES_KEY = "nodes"
NODE_ID_FIELD = "nodeId"
# Fields that name the node's run: its key is the run's (the columns project_id, run_name), and
# projectName is the run's, stored once in the runs table; none is repeated in ``fields``.
RUN_FIELDS = ("projectId", "runName", "projectName")
# Documented text fields (API name -> column), in table order.
TEXT_FIELDS = {
    "state": "state",
    "resourceType": "resource_type",
    "containerImage": "container_image",
    "host": "host",
}
INTEGER_FIELDS = {"rank": "rank", "exitCode": "exit_code"}
NODE_KEY_COLUMNS = ("project_id", "run_name", "node_id")
# The columns a node's version is compared on (a change in any opens a new version).
NODE_CONTENT_COLUMNS = (
    "state",
    "resource_type",
    "container_image",
    "rank",
    "exit_code",
    "host",
    "fields",
)
NODE_COLUMNS = NODE_KEY_COLUMNS + NODE_CONTENT_COLUMNS


def page_items(body: Any, page: int) -> list[Any]:
    """The nodes of one page; :class:`RunShapeError` when the page is not a node list."""
    items = body.get(NODES_KEY) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise RunShapeError(f"node list page {page}: expected an object with {NODES_KEY}")
    return items


def flatten_node(node: Any) -> FlatNode:
    """One node object as a row; :class:`RunShapeError` when it has no usable nodeId."""
    if not isinstance(node, dict):
        raise RunShapeError("node list: a node that is not a JSON object")
    node_id = node.get(NODE_ID_FIELD)
    if isinstance(node_id, bool) or not isinstance(node_id, str | int) or node_id == "":
        raise RunShapeError("node list: a node without a nodeId")
    rest = {k: v for k, v in node.items() if k != NODE_ID_FIELD and k not in RUN_FIELDS}
    texts = {
        column: as_text(rest.pop(name, None), f"node {name}")
        for name, column in TEXT_FIELDS.items()
    }
    numbers: dict[str, int | None] = {}
    for name, column in INTEGER_FIELDS.items():
        try:
            numbers[column] = as_integer(rest.get(name), f"node {name}")
        except RunShapeError:
            numbers[column] = None  # kept in fields, as sent
        else:
            rest.pop(name, None)
    fields = as_text(rest, "node fields") if rest else None
    return FlatNode(
        node_id=as_text(node_id, "nodeId") or "",
        state=texts["state"],
        resource_type=texts["resource_type"],
        container_image=texts["container_image"],
        rank=numbers["rank"],
        exit_code=numbers["exit_code"],
        host=texts["host"],
        fields=fields,
    )


def flatten_pages(pages: Iterable[Any]) -> list[FlatNode]:
    """Every node of a run's node list pages (parsed bodies, in order), each once: a node that
    shows up on two pages (the list shifted while it was read) keeps its later sighting."""
    nodes: dict[str, FlatNode] = {}
    for number, body in enumerate(pages, start=1):
        for item in page_items(body, number):
            node = flatten_node(item)
            nodes.pop(node.node_id, None)
            nodes[node.node_id] = node
    return list(nodes.values())


def node_row(node: FlatNode) -> dict[str, Any]:
    """The content columns of a node, by column name."""
    return {column: getattr(node, column) for column in NODE_CONTENT_COLUMNS}


def node_json(row: dict[str, Any]) -> str:
    """A stored node row as the JSON its closed history version keeps."""
    return jsontext.dumps({k: v for k, v in row.items() if v is not None})
