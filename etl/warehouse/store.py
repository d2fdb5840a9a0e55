"""The rows of one runs table: screening a chunk before it is written, the chunk's transaction
under the table's lock, and the few reads and updates an export makes on stored runs.

A chunk is one transaction under the table's lock (:meth:`Schema.table_lock`): its rows are
built again from the mapping found under the lock if other exports added columns since its
schema step, then staged, compared with the stored rows and merged
(:func:`etl.warehouse.writer.merge_chunk`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError
from ..model import Pair
from ..transform import (
    GONE_COLUMN,
    KEY_COLUMNS,
    TERMINAL_STATUSES,
    FlatRun,
    env_keys,
    extra_fields,
)
from .failures import first_line
from .families import Family
from .nodes import pairs_with_nodes, write_nodes
from .schema import ColumnMap, Schema
from .writer import chunk_rows, merge_chunk

log = logging.getLogger("nsml_etl.store")  # its name before the sub-packages

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
        columns, rows = chunk_rows(runs, mapping)  # outside the lock: it is per run
        try:
            with self.schema.table_lock() as conn:  # one writer per table, across exports too
                current = self.schema.read_mapping(conn)
                if current != mapping:
                    log.debug(
                        "the column mapping of %s changed under this chunk; building it again",
                        self.table_name,
                    )
                    columns, rows = chunk_rows(runs, self.schema.usable_mapping(conn, current))
                merge_chunk(conn, self.schema, columns, rows, batch_id)
                write_nodes(
                    conn, self.schema.nodes_table, self.schema.node_history_table, runs, batch_id
                )
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"writing {len(rows)} runs to table {self.table_name} failed: {first_line(exc)}"
            ) from exc
        return len(rows)


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
