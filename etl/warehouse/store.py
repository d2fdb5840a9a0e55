"""Writing runs: screening a chunk, staging it, merging it into the runs table with its change
history, and the few reads and updates an export makes on stored runs.

A chunk is one transaction under the table's lock (:meth:`Schema.table_lock`): its rows are
built again from the mapping found under the lock if other exports added columns since its
schema step, staged in a temporary table, compared with the stored rows (a changed run closes
its current version in ``nsml_run_history``), then upserted with one ``INSERT ... SELECT``.
Python touches each run once, to hand the rows to the driver (COPY on PostgreSQL).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError
from ..model import Pair
from ..tablenames import HISTORY_TABLE, STAGE_TABLE
from ..transform import (
    GONE_COLUMN,
    KEY_COLUMNS,
    LIST_TIME_COLUMNS,
    OBSERVATION_COLUMNS,
    TERMINAL_STATUSES,
    FlatRun,
    build_frame,
    env_keys,
    extra_fields,
)
from .dialects import Family, first_line
from .nodes import pairs_with_nodes, write_nodes
from .schema import (
    TIMESTAMP_COLUMNS,
    ColumnMap,
    Schema,
)

log = logging.getLogger("nsml_etl.store")  # its name before the sub-packages

# Run names per SELECT when reading the stored rows that a chunk supersedes.
HISTORY_LOOKUP_KEYS = 1000
# The share of MySQL's max_allowed_packet one run's escaped text may take: the rest is the
# statement around it (column names, the other runs of a multi-row INSERT stay under 1 MB).
PACKET_SHARE_FOR_ONE_RUN = 0.9
# Characters PyMySQL sends with a backslash before them.
_ESCAPED_BY_DRIVER = ("\\", "'", '"', "\n", "\r", "\x00", "\x1a")


class RunStore:
    """The rows of one runs table: screens and upserts chunks into it (with their change
    history) and reads the stored runs an export needs. Its ``schema`` keeps the table in step
    with the runs and holds the table's lock; the store only writes rows."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.engine: Engine = schema.engine
        self.table_name = schema.table_name
        self.family: Family = schema.family
        self._packet_limit: int | None = None

    def screen(self, runs: list[FlatRun]) -> tuple[list[FlatRun], list[tuple[FlatRun, str]]]:
        """The runs this database can store as they are (text cleaned where the family must),
        and the others with the reason, checked before writing so that one bad run never
        takes its chunk down and its reason reads well."""
        family = self.family
        if family.stores_any_text:
            return runs, []
        bad_names = {
            name: problem
            for what, names in (("env key", env_keys(runs)), ("field name", extra_fields(runs)))
            for name in names
            if (problem := family.name_problem(name, what)) is not None
        }
        storable, refused = [], []
        packet = self._statement_limit()
        for run in runs:
            problem = family.key_problem(*run.pair)
            if problem is None and bad_names:
                problem = next(
                    (bad_names[n] for n in (*run.env, *run.extra) if n in bad_names), None
                )
            if problem is None and packet is not None:
                problem = _too_large(run, packet)
            if problem is not None:
                refused.append((run, problem))
                continue
            if run.has_nul and family.cleans_text:
                _clean_run(run, family)
            storable.append(run)
        return storable, refused

    def _statement_limit(self) -> int | None:
        """The most bytes of text one run may hold here (MySQL sends a statement in one packet
        of at most max_allowed_packet, and drops the connection past it), or None."""
        if self._packet_limit is None and self.family.packet_size_query is not None:
            try:
                with self.engine.connect() as conn:
                    packet = int(conn.exec_driver_sql(self.family.packet_size_query).scalar_one())
            except SQLAlchemyError as exc:
                raise DatabaseError(
                    f"reading the server's packet size failed: {first_line(exc)}"
                ) from exc
            # Room for the statement around the run, and for its escaping.
            self._packet_limit = int(packet * PACKET_SHARE_FOR_ONE_RUN)
        return self._packet_limit

    # -- data ----------------------------------------------------------------------------

    def pairs_with_status(self, statuses: Iterable[str]) -> set[Pair]:
        """Stored runs whose status is one of ``statuses`` (empty before the first export)."""
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(self.table_name):
                    return set()
                table = self.schema.runs_table(KEY_COLUMNS + ("status",))
                query = sa.select(table.c.project_id, table.c.run_name).where(
                    table.c.status.in_(sorted(statuses))
                )
                return {Pair(*row) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading stored runs failed: {first_line(exc)}") from exc

    def pairs_with_nodes(self) -> set[Pair]:
        """Stored runs with at least one node in nsml_run_nodes (export --nodes)."""
        try:
            with self.engine.connect() as conn:
                return pairs_with_nodes(conn, self.schema.nodes_table)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading stored nodes failed: {first_line(exc)}") from exc

    def unfinished_pairs(self, projects: Iterable[str] | None = None) -> set[Pair]:
        """Stored runs without a terminal status that are not marked gone (of ``projects``
        only, when given): the runs an export should still hear about."""
        try:
            with self.engine.connect() as conn:
                inspector = sa.inspect(conn)
                if not inspector.has_table(self.table_name):
                    return set()
                names = {c["name"].lower() for c in inspector.get_columns(self.table_name)}
                has_gone = GONE_COLUMN in names  # a table from before gone_at has none
                table = self.schema.runs_table(
                    KEY_COLUMNS + ("status",) + ((GONE_COLUMN,) if has_gone else ())
                )
                query = sa.select(table.c.project_id, table.c.run_name).where(
                    sa.or_(
                        table.c.status.is_(None), table.c.status.not_in(sorted(TERMINAL_STATUSES))
                    )
                )
                if has_gone:
                    query = query.where(table.c[GONE_COLUMN].is_(None))
                if projects is not None:
                    query = query.where(table.c.project_id.in_(sorted(set(projects))))
                return {Pair(*row) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading stored runs failed: {first_line(exc)}") from exc

    def mark_gone(self, pairs: Iterable[Pair], at: datetime) -> int:
        """Set ``gone_at`` of the stored runs among ``pairs`` (the API answered 404 for them)
        that are not marked yet; returns how many were marked. Pairs never stored are left
        alone: there is nothing to mark."""
        params = [{"p": p.project_id, "r": p.run_name, "at": at} for p in pairs]
        if not params:
            return 0
        self.schema.prepare(set(), set())  # a table made before gone_at gets the column
        quote = self.engine.dialect.identifier_preparer.quote
        gone = quote(GONE_COLUMN)
        update = sa.text(
            f"UPDATE {quote(self.table_name)} SET {gone} = :at "  # noqa: S608 - quoted names
            f"WHERE project_id = :p AND run_name = :r AND {gone} IS NULL"
        )
        try:
            with self.schema.table_lock() as conn:
                marked = sum(conn.execute(update, row).rowcount for row in params)
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"marking runs gone in table {self.table_name} failed: {first_line(exc)}"
            ) from exc
        if marked:
            log.info("%d stored runs of %s are gone upstream (HTTP 404)", marked, self.table_name)
        return marked

    # A chunk is staged in a temporary table (the family's create_stage and fill_stage), then
    # merged by set-based SQL: the history is compared and extended in the database, and the
    # upsert is one INSERT ... SELECT. Python touches each run once, to hand the rows to the
    # driver (COPY on PostgreSQL).

    def _merge_stage(self, conn: Connection, columns: list[str]) -> None:
        """INSERT ... SELECT from the stage, updating every non-key column of existing runs;
        list times are known only when a run was discovered, so they are never erased."""
        quote = conn.dialect.identifier_preparer.quote
        runs = quote(self.table_name)
        names = ", ".join(quote(c) for c in columns)
        incoming = self.family.incoming
        sets = ", ".join(
            f"{quote(c)} = COALESCE({incoming(quote(c))}, {runs}.{quote(c)})"
            if c in LIST_TIME_COLUMNS
            else f"{quote(c)} = {incoming(quote(c))}"
            for c in columns
            if c not in KEY_COLUMNS
        )
        conflict = self.family.upsert_clause([quote(c) for c in KEY_COLUMNS], sets)
        # WHERE 1 = 1: SQLite's parser needs it to tell ON CONFLICT from a join's ON.
        conn.exec_driver_sql(
            f"INSERT INTO {runs} ({names}) SELECT {names} FROM {STAGE_TABLE} "  # noqa: S608 - quoted
            f"WHERE 1 = 1 {conflict}"
        )

    def _write_history(self, conn: Connection, columns: list[str], batch_id: int | None) -> None:
        """Before the merge: close the current version of every staged run whose content
        differs from its stored row (keeping that row as JSON), then open a version for every
        staged run that has none. Unchanged runs add nothing."""
        quote = conn.dialect.identifier_preparer.quote
        runs, history = quote(self.table_name), quote(HISTORY_TABLE)
        content = [
            quote(c) for c in columns if c not in KEY_COLUMNS and c not in OBSERVATION_COLUMNS
        ]
        # Every name below is quoted by the dialect; the table name is a bound parameter.
        current = (
            "h.table_name = :table AND h.project_id = s.project_id "
            "AND h.run_name = s.run_name AND h.valid_to IS NULL"
        )
        same_run = "r.project_id = s.project_id AND r.run_name = s.run_name"
        family = self.family
        differs = family.row_differs([f"s.{c}" for c in content], [f"r.{c}" for c in content])
        changed_sql = family.changed_runs_sql(
            STAGE_TABLE, runs, history, same_run, current, differs
        )
        unversioned = family.unversioned_sql(STAGE_TABLE, history, current)
        changed = conn.execute(sa.text(changed_sql), {"table": self.table_name}).all()
        if changed:
            superseded = self._stored_rows(conn, {Pair(p, r) for _, p, r, _ in changed})
            table = self.schema.history_table
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
        legacy = (", content_hash", ", ''") if self.schema.legacy_content_hash else ("", "")
        conn.execute(
            sa.text(
                f"INSERT INTO {history} (table_name, project_id, run_name, valid_from, "  # noqa: S608
                f"batch_id, status{legacy[0]}) SELECT :table, s.project_id, s.run_name, "
                f"s.fetched_at, :batch_id, s.status{legacy[1]} FROM {unversioned}"
            ),
            {"table": self.table_name, "batch_id": batch_id},
        )

    def _stored_rows(self, conn: Connection, pairs: set[Pair]) -> dict[Pair, str]:
        """The runs-table rows of ``pairs`` as JSON, before this chunk overwrites them."""
        quote = conn.dialect.identifier_preparer.quote
        rows: dict[Pair, str] = {}
        names = sorted({p.run_name for p in pairs})
        projects = sorted({p.project_id for p in pairs})
        for start in range(0, len(names), HISTORY_LOOKUP_KEYS):
            query = sa.text(
                f"SELECT * FROM {quote(self.table_name)} "  # noqa: S608 - quoted name
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
                        k: v
                        for k, v in row.items()
                        if v is not None and k not in OBSERVATION_COLUMNS
                    }
                    rows[pair] = json.dumps(kept, ensure_ascii=False, default=str)
        return rows

    def upsert(
        self, runs: Sequence[FlatRun], mapping: ColumnMap, batch_id: int | None = None
    ) -> int:
        """Write one chunk and its change history in one transaction; returns the runs
        written. The rows are built from ``mapping`` (what :meth:`Schema.prepare` returned for these
        runs) and built again, under the table's lock, from the mapping found there if other
        exports have changed it since (added columns, given a waiting key a column and filled
        it from the runs stored then): under the lock nobody else can change it, so the chunk
        is written with the table as it is, however many columns others add. Only a mapped
        column that does not exist yet (a crashed export's, see :meth:`Schema.usable_mapping`) is
        :class:`MappingChanged`: :meth:`Schema.prepare` adds it, then this is called again."""
        if not runs:
            return 0
        columns, rows = _chunk_rows(runs, mapping)  # outside the lock: it is per run
        try:
            with self.schema.table_lock() as conn:  # one writer per table, across exports too
                current = self.schema.read_mapping(conn)
                if current != mapping:
                    log.debug(
                        "the column mapping of %s changed under this chunk; building it again",
                        self.table_name,
                    )
                    columns, rows = _chunk_rows(runs, self.schema.usable_mapping(conn, current))
                runs_table = conn.dialect.identifier_preparer.quote(self.table_name)
                timestamps = [i for i, c in enumerate(columns) if c in TIMESTAMP_COLUMNS]
                self.family.create_stage(conn, STAGE_TABLE, runs_table)
                self.family.fill_stage(conn, STAGE_TABLE, columns, rows, timestamps)
                self._write_history(conn, columns, batch_id)  # first: it reads the old rows
                self._merge_stage(conn, columns)
                self.family.drop_stage(conn, STAGE_TABLE)
                write_nodes(
                    conn, self.schema.nodes_table, self.schema.node_history_table, runs, batch_id
                )
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"writing {len(rows)} runs to table {self.table_name} failed: {first_line(exc)}"
            ) from exc
        return len(rows)


def _chunk_rows(runs: Sequence[FlatRun], mapping: ColumnMap) -> tuple[list[str], list[list[Any]]]:
    """A chunk's column names and rows for the driver, built from ``mapping``."""
    frame = build_frame(runs, mapping.env, mapping.fields)
    # One object block -> lists in C; itertuples() boxes every cell through Series.
    return list(frame.columns), frame.to_numpy(dtype=object).tolist()


def _too_large(run: FlatRun, limit: int) -> str | None:
    """Why one run's text cannot go to the server in one statement, or None. Measured as the
    driver sends it: UTF-8, with a backslash before each character it escapes."""
    texts = [
        v for v in (*run.columns.values(), *run.env.values(), *run.extra.values()) if type(v) is str
    ]
    if sum(map(len, texts)) * 8 <= limit:  # 4 bytes a character at most, escaped: surely fits
        return None
    size = sum(
        len(text.encode("utf-8", "surrogatepass")) + sum(map(text.count, _ESCAPED_BY_DRIVER))
        for text in texts
    )
    if size <= limit:
        return None
    return (
        f"the run holds {size / 1e6:.1f} MB of text; the server takes at most "
        f"{limit / 1e6:.1f} MB in one statement (max_allowed_packet)"
    )


def _clean_run(run: FlatRun, family: Family) -> None:
    """Replace, in place, what the family's text columns cannot hold (envs keeps it exact)."""
    clean = family.clean_text
    for column, value in run.columns.items():
        if column != "envs":
            run.columns[column] = clean(value)
    run.env = {key: clean(value) for key, value in run.env.items()}
    run.extra = {key: clean(value) for key, value in run.extra.items()}


def _as_datetime(value: object) -> object:
    # Read back from SQLite's stage as text; other drivers return datetimes.
    return datetime.fromisoformat(value) if isinstance(value, str) else value
