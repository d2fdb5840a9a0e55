"""One chunk's write, in the transaction its caller holds under the table's lock
(:meth:`etl.warehouse.store.RunStore.upsert`): the rows are staged in a temporary table (the
family's ``create_stage`` and ``fill_stage``: COPY on PostgreSQL, the driver's executemany
elsewhere), compared with the stored rows so that the change history grows in the database
(a changed run closes its current version in ``nsml_run_history``, keeping its old row as JSON;
a run without a current version opens one), then merged with one ``INSERT ... SELECT``. Every
statement covers the whole chunk; Python touches each run once, to build its row
(:func:`chunk_rows`) and hand it to the driver.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import Pair
from ..tablenames import HISTORY_TABLE, STAGE_TABLE
from ..transform import KEY_COLUMNS, LIST_TIME_COLUMNS, OBSERVATION_COLUMNS, FlatRun, build_frame
from .schema import ColumnMap, Schema
from .tables import TIMESTAMP_COLUMNS

# Run names per SELECT when reading the stored rows that a chunk supersedes.
HISTORY_LOOKUP_KEYS = 1000


def chunk_rows(runs: Sequence[FlatRun], mapping: ColumnMap) -> tuple[list[str], list[list[Any]]]:
    """A chunk's column names and rows for the driver, built from ``mapping``."""
    frame = build_frame(runs, mapping.env, mapping.fields)
    # One object block -> lists in C; itertuples() boxes every cell through Series.
    return list(frame.columns), frame.to_numpy(dtype=object).tolist()


def merge_chunk(
    conn: Connection,
    schema: Schema,
    columns: list[str],
    rows: list[list[Any]],
    batch_id: int | None,
) -> None:
    """Stage ``rows`` (in ``columns`` order, as :func:`chunk_rows` builds them), extend the
    history of the runs they change, and merge them into the runs table of ``schema``."""
    family = schema.family
    runs_table = conn.dialect.identifier_preparer.quote(schema.table_name)
    timestamps = [i for i, c in enumerate(columns) if c in TIMESTAMP_COLUMNS]
    family.create_stage(conn, STAGE_TABLE, runs_table)
    family.fill_stage(conn, STAGE_TABLE, columns, rows, timestamps)
    _write_history(conn, schema, columns, batch_id)  # first: it reads the old rows
    _merge_stage(conn, schema, columns)
    family.drop_stage(conn, STAGE_TABLE)


def _merge_stage(conn: Connection, schema: Schema, columns: list[str]) -> None:
    """INSERT ... SELECT from the stage, updating every non-key column of existing runs;
    list times are known only when a run was discovered, so they are never erased."""
    quote = conn.dialect.identifier_preparer.quote
    runs = quote(schema.table_name)
    names = ", ".join(quote(c) for c in columns)
    incoming = schema.family.incoming
    sets = ", ".join(
        f"{quote(c)} = COALESCE({incoming(quote(c))}, {runs}.{quote(c)})"
        if c in LIST_TIME_COLUMNS
        else f"{quote(c)} = {incoming(quote(c))}"
        for c in columns
        if c not in KEY_COLUMNS
    )
    conflict = schema.family.upsert_clause([quote(c) for c in KEY_COLUMNS], sets)
    # WHERE 1 = 1: SQLite's parser needs it to tell ON CONFLICT from a join's ON.
    conn.exec_driver_sql(
        f"INSERT INTO {runs} ({names}) SELECT {names} FROM {STAGE_TABLE} "  # noqa: S608 - quoted
        f"WHERE 1 = 1 {conflict}"
    )


def _write_history(
    conn: Connection, schema: Schema, columns: list[str], batch_id: int | None
) -> None:
    """Before the merge: close the current version of every staged run whose content
    differs from its stored row (keeping that row as JSON), then open a version for every
    staged run that has none. Unchanged runs add nothing."""
    quote = conn.dialect.identifier_preparer.quote
    runs, history = quote(schema.table_name), quote(HISTORY_TABLE)
    content = [quote(c) for c in columns if c not in KEY_COLUMNS and c not in OBSERVATION_COLUMNS]
    # Every name below is quoted by the dialect; the table name is a bound parameter.
    current = (
        "h.table_name = :table AND h.project_id = s.project_id "
        "AND h.run_name = s.run_name AND h.valid_to IS NULL"
    )
    same_run = "r.project_id = s.project_id AND r.run_name = s.run_name"
    family = schema.family
    differs = family.row_differs([f"s.{c}" for c in content], [f"r.{c}" for c in content])
    changed_sql = family.changed_runs_sql(STAGE_TABLE, runs, history, same_run, current, differs)
    unversioned = family.unversioned_sql(STAGE_TABLE, history, current)
    changed = conn.execute(sa.text(changed_sql), {"table": schema.table_name}).all()
    if changed:
        superseded = _stored_rows(conn, schema, {Pair(p, r) for _, p, r, _ in changed})
        table = schema.history_table
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values(valid_to=sa.bindparam("closed_at"), content=sa.bindparam("old")),
            [
                {
                    "row_id": row_id,
                    "closed_at": _as_datetime(closed_at),
                    "old": superseded.get(Pair(project_id, run_name)),
                }
                for row_id, project_id, run_name, closed_at in changed
            ],
        )
    # Runs with no current version: new ones and those just closed.
    legacy = (", content_hash", ", ''") if schema.legacy_content_hash else ("", "")
    conn.execute(
        sa.text(
            f"INSERT INTO {history} (table_name, project_id, run_name, valid_from, "  # noqa: S608
            f"batch_id, status{legacy[0]}) SELECT :table, s.project_id, s.run_name, "
            f"s.fetched_at, :batch_id, s.status{legacy[1]} FROM {unversioned}"
        ),
        {"table": schema.table_name, "batch_id": batch_id},
    )


def _stored_rows(conn: Connection, schema: Schema, pairs: set[Pair]) -> dict[Pair, str]:
    """The runs-table rows of ``pairs`` as JSON, before this chunk overwrites them."""
    quote = conn.dialect.identifier_preparer.quote
    rows: dict[Pair, str] = {}
    names = sorted({p.run_name for p in pairs})
    projects = sorted({p.project_id for p in pairs})
    for start in range(0, len(names), HISTORY_LOOKUP_KEYS):
        query = sa.text(
            f"SELECT * FROM {quote(schema.table_name)} "  # noqa: S608 - quoted name
            "WHERE project_id IN :projects AND run_name IN :names"
        ).bindparams(
            sa.bindparam("projects", expanding=True), sa.bindparam("names", expanding=True)
        )
        result = conn.execute(
            query, {"projects": projects, "names": names[start : start + HISTORY_LOOKUP_KEYS]}
        )
        for row in result.mappings():
            pair = Pair(row["project_id"], row["run_name"])
            if pair in pairs:
                kept = {
                    k: v for k, v in row.items() if v is not None and k not in OBSERVATION_COLUMNS
                }
                rows[pair] = json.dumps(kept, ensure_ascii=False, default=str)
    return rows


def _as_datetime(value: object) -> object:
    # Read back from SQLite's stage as text; other drivers return datetimes.
    return datetime.fromisoformat(value) if isinstance(value, str) else value
