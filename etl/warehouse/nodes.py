"""Writing runs' node lists into ``nsml_run_nodes`` and its change history.

A run whose node list came with it (``FlatRun.nodes`` not None) has its stored nodes replaced
by that list, in the transaction of its chunk (under the runs table's lock, after the runs are
merged): a new node opens a version in ``nsml_run_node_history``; a node whose content changed
closes its current version (``valid_to``, its old row kept as JSON in ``content``) and opens
one; a node missing from the list is deleted from ``nsml_run_nodes`` and its version closed the
same way, so the current table is the last list and the history keeps every node ever seen.
Unchanged nodes cost nothing but the read. A run whose node list was not fetched (or failed)
keeps its stored nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError
from ..model import FlatNode, Pair
from ..nodelist import NODE_CONTENT_COLUMNS, node_json, node_row
from ..transform import FlatRun
from .failures import first_line
from .families import Family

# Runs per SELECT when reading the stored nodes a chunk replaces.
NODE_LOOKUP_RUNS = 500
_TEXT_COLUMNS = ("state", "resource_type", "container_image", "host", "fields")


def node_problem(family: Family, pair: Pair, node_id: str) -> str | None:
    """Why a node of ``pair``'s run with this id cannot be stored here, or None: the family's
    rules for a key part (a NUL on PostgreSQL, 255 characters on MySQL), and on PostgreSQL the
    three keys together in one index entry."""
    problem = family.key_problem(pair.project_id, node_id)
    if problem is None and family.cleans_text:
        problem = family.key_problem(pair.project_id, pair.run_name + node_id)
    if problem is None:
        return None
    return f"node list: node id {node_id[:40]!r}: {problem.replace('run name', 'node id')}"


def screen_nodes(family: Family, runs: Iterable[FlatRun]) -> list[tuple[FlatRun, str]]:
    """The runs whose node list this database cannot store, with the reason (their node list
    is then left out: the run itself is written); text the family cannot hold is cleaned in
    the others, as it is in runs (PostgreSQL: NUL becomes U+FFFD)."""
    refused = []
    for run in runs:
        if run.nodes is None:
            continue
        problem = next(
            (p for n in run.nodes if (p := node_problem(family, run.pair, n.node_id)) is not None),
            None,
        )
        if problem is not None:
            run.nodes = None
            refused.append((run, problem))
        elif family.cleans_text:
            run.nodes = [_cleaned(node, family) for node in run.nodes]
    return refused


def _cleaned(node: FlatNode, family: Family) -> FlatNode:
    changes = {c: family.clean_text(getattr(node, c)) for c in _TEXT_COLUMNS}
    return dataclasses.replace(node, **changes)


def pairs_with_nodes(conn: Connection, nodes: sa.Table) -> set[Pair]:
    """The runs with at least one stored node (none before the table exists)."""
    if not sa.inspect(conn).has_table(nodes.name):
        return set()
    query = sa.select(nodes.c.project_id, nodes.c.run_name).distinct()
    return {Pair(*row) for row in conn.execute(query)}


def write_nodes(
    conn: Connection,
    nodes: sa.Table,
    history: sa.Table,
    runs: Sequence[FlatRun],
    batch_id: int | None,
) -> None:
    """Replace the stored nodes of every run in ``runs`` that carries a node list (see the
    module docstring), in ``conn``'s transaction."""
    listed = [run for run in runs if run.nodes is not None]
    if not listed:
        return
    stored = _stored_nodes(conn, nodes, {run.pair for run in listed})
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    gone: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    opens: list[dict[str, Any]] = []
    for run in listed:
        at = run.columns["fetched_at"]
        key = {"k_project": run.pair.project_id, "k_run": run.pair.run_name}
        old = stored.get(run.pair, {})
        incoming = {node.node_id: node for node in run.nodes or ()}
        for node_id, row in old.items():
            if node_id not in incoming:
                gone.append({**key, "k_node": node_id})
                closes.append({**key, "k_node": node_id, "at": at, "old": node_json(row)})
        for node_id, node in incoming.items():
            row = node_row(node)
            this = {**key, "k_node": node_id}
            before = old.get(node_id)
            if before == row:
                continue
            if before is None:
                inserts.append(
                    {
                        "project_id": run.pair.project_id,
                        "run_name": run.pair.run_name,
                        "node_id": node_id,
                        **row,
                    }
                )
            else:
                updates.append({**this, **{f"v_{c}": v for c, v in row.items()}})
                closes.append({**this, "at": at, "old": node_json(before)})
            opens.append(
                {
                    "project_id": run.pair.project_id,
                    "run_name": run.pair.run_name,
                    "node_id": node_id,
                    "valid_from": at,
                    "batch_id": batch_id,
                    "state": node.state,
                    "exit_code": node.exit_code,
                }
            )
    try:
        _execute(conn, nodes, history, inserts, updates, gone, closes, opens)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"writing the nodes of {len(listed)} runs to table {nodes.name} failed: "
            f"{first_line(exc)}"
        ) from exc


def _is_key(table: sa.Table, prefix: str = "k_") -> Any:
    return sa.and_(
        table.c.project_id == sa.bindparam(f"{prefix}project"),
        table.c.run_name == sa.bindparam(f"{prefix}run"),
        table.c.node_id == sa.bindparam(f"{prefix}node"),
    )


def _execute(
    conn: Connection,
    nodes: sa.Table,
    history: sa.Table,
    inserts: list[dict[str, Any]],
    updates: list[dict[str, Any]],
    gone: list[dict[str, Any]],
    closes: list[dict[str, Any]],
    opens: list[dict[str, Any]],
) -> None:
    # Versions are closed before new ones open: the current version is the one without
    # valid_to, and there is never more than one.
    if closes:
        conn.execute(
            sa.update(history)
            .where(_is_key(history), history.c.valid_to.is_(None))
            .values(valid_to=sa.bindparam("at"), content=sa.bindparam("old")),
            closes,
        )
    if gone:
        conn.execute(sa.delete(nodes).where(_is_key(nodes)), gone)
    if updates:
        conn.execute(
            sa.update(nodes)
            .where(_is_key(nodes))
            .values({c: sa.bindparam(f"v_{c}") for c in NODE_CONTENT_COLUMNS}),
            updates,
        )
    if inserts:
        conn.execute(sa.insert(nodes), inserts)
    if opens:
        conn.execute(sa.insert(history), opens)


def _stored_nodes(
    conn: Connection, nodes: sa.Table, pairs: set[Pair]
) -> dict[Pair, dict[str, dict[str, Any]]]:
    """The stored nodes of ``pairs``, by run and node id, as content-column dicts. Read by
    project and run name, then kept by exact pair (a lookup may match more runs)."""
    found: dict[Pair, dict[str, dict[str, Any]]] = {}
    ordered = sorted(pairs)
    columns = [nodes.c[c] for c in NODE_CONTENT_COLUMNS]
    for start in range(0, len(ordered), NODE_LOOKUP_RUNS):
        part = ordered[start : start + NODE_LOOKUP_RUNS]
        query = sa.select(nodes.c.project_id, nodes.c.run_name, nodes.c.node_id, *columns).where(
            nodes.c.project_id.in_(sorted({p.project_id for p in part})),
            nodes.c.run_name.in_(sorted({p.run_name for p in part})),
        )
        for project_id, run_name, node_id, *values in conn.execute(query):
            pair = Pair(project_id, run_name)
            if pair in pairs:
                found.setdefault(pair, {})[node_id] = dict(
                    zip(NODE_CONTENT_COLUMNS, values, strict=True)
                )
    return found
