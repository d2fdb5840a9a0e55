"""GPUs per GPU server: ``nsml_gpu_servers(gpu_svr_code, gpus, label)``, filled by users.

The run-hours views turn into GPU-hours only where this table knows a server's GPU count.
nsml-etl never guesses one: it starts empty, and rows come from ``nsml-etl gpu-servers set`` or
``load`` (a TOML file). One table per database, shared by every runs table (a server code
means the same machine whichever table a run landed in).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .. import files
from ..errors import DatabaseError, InputError
from ..tablenames import GPU_SERVERS_TABLE
from .failures import first_line
from .tables import UTF8MB4, Text

# Largest value of the BIGINT gpu_svr_code column.
MAX_CODE = 2**63 - 1
# More GPUs than any one server has: a typo guard (a count is per server, not per cluster).
MAX_GPUS = 4096


@dataclass(frozen=True)
class GpuServer:
    gpu_svr_code: int
    gpus: int
    label: str | None = None


def gpu_servers_table() -> sa.Table:
    return sa.Table(
        GPU_SERVERS_TABLE,
        sa.MetaData(),
        sa.Column("gpu_svr_code", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("label", Text),
        **UTF8MB4,
    )


def ensure_table(conn: Connection) -> sa.Table:
    """The table, created empty if this database has none yet."""
    table = gpu_servers_table()
    table.create(conn, checkfirst=True)
    return table


def check_server(code: int, gpus: int, where: str) -> None:
    """:class:`InputError` unless ``code`` fits the column and ``gpus`` is a plausible count."""
    if not 0 <= code <= MAX_CODE:
        raise InputError(f"{where}: GPU server code {code} is out of range (0 to {MAX_CODE})")
    if not 0 <= gpus <= MAX_GPUS:
        raise InputError(
            f"{where}: {gpus} GPUs for server {code}; expected 0 to {MAX_GPUS} "
            "(the GPUs of one server)"
        )


def read_toml(path: Path) -> list[GpuServer]:
    """Servers from a TOML file, all checked before anything is written::

    [servers]
    205 = 1                                  # code = GPUs
    207 = { gpus = 2, label = "A100 x2" }    # or a table with an optional label
    """
    document = files.read_toml(path, "GPU servers file")
    unknown = sorted(set(document) - {"servers"})
    servers = document.get("servers")
    if unknown or not isinstance(servers, dict):
        raise InputError(
            f"{path}: expected one [servers] table of code = GPUs entries"
            + (f" (unknown keys: {', '.join(unknown)})" if unknown else "")
        )
    entries = []
    for key, value in servers.items():
        where = f"{path}: servers.{key}"
        if not key.isdigit():
            raise InputError(f"{where}: a GPU server code is a number (gpuSvrCode)")
        label = None
        if isinstance(value, dict):
            extra = sorted(set(value) - {"gpus", "label"})
            if extra:
                raise InputError(f"{where}: unknown keys {', '.join(extra)} (gpus, label)")
            label = value.get("label")
            if label is not None and not isinstance(label, str):
                raise InputError(f"{where}: label must be a string")
            value = value.get("gpus")
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"{where}: the number of GPUs must be a whole number")
        check_server(int(key), value, where)
        entries.append(GpuServer(int(key), value, label))
    return entries


def set_servers(engine: Engine, servers: Iterable[GpuServer]) -> int:
    """Insert or replace these servers' rows, in one transaction."""
    servers = list(servers)
    try:
        with engine.begin() as conn:
            table = ensure_table(conn)
            codes = [s.gpu_svr_code for s in servers]
            if codes:
                conn.execute(sa.delete(table).where(table.c.gpu_svr_code.in_(codes)))
                conn.execute(sa.insert(table), [vars(s) for s in servers])
    except SQLAlchemyError as exc:
        raise DatabaseError(f"writing {GPU_SERVERS_TABLE} failed: {first_line(exc)}") from exc
    return len(servers)


def unset_servers(engine: Engine, codes: Iterable[int]) -> int:
    """Forget these servers' GPU counts; returns how many rows there were."""
    try:
        with engine.begin() as conn:
            table = ensure_table(conn)
            result = conn.execute(sa.delete(table).where(table.c.gpu_svr_code.in_(list(codes))))
            return result.rowcount
    except SQLAlchemyError as exc:
        raise DatabaseError(f"writing {GPU_SERVERS_TABLE} failed: {first_line(exc)}") from exc


def list_servers(engine: Engine, runs_table: str) -> tuple[list[GpuServer], list[tuple[Any, ...]]]:
    """The known servers, and (code, eng_full_name, runs) of the servers that ``runs_table``
    has runs on but that have no GPU count. Reads only: a database without the table has no
    known servers."""
    try:
        with engine.begin() as conn:
            table = gpu_servers_table()
            if not sa.inspect(conn).has_table(table.name):
                return [], _runs_without_count(conn, runs_table, None)
            known = [
                GpuServer(*row)
                for row in conn.execute(
                    sa.select(table.c.gpu_svr_code, table.c.gpus, table.c.label).order_by(
                        table.c.gpu_svr_code
                    )
                )
            ]
            return known, _runs_without_count(conn, runs_table, table)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading {GPU_SERVERS_TABLE} failed: {first_line(exc)}") from exc


def _runs_without_count(
    conn: Connection, runs_table: str, servers: sa.Table | None
) -> list[tuple[Any, ...]]:
    """(code, eng_full_name, runs) per server ``runs_table`` has runs on and ``servers`` (None:
    no such table yet) has no count for."""
    if not sa.inspect(conn).has_table(runs_table):
        return []
    runs = sa.table(runs_table, sa.column("gpu_svr_code"), sa.column("eng_full_name"))
    query = sa.select(runs.c.gpu_svr_code, sa.func.max(runs.c.eng_full_name), sa.func.count())
    if servers is not None:
        query = query.select_from(
            runs.outerjoin(servers, servers.c.gpu_svr_code == runs.c.gpu_svr_code)
        ).where(servers.c.gpu_svr_code.is_(None))
    missing = conn.execute(
        query.where(runs.c.gpu_svr_code.is_not(None))
        .group_by(runs.c.gpu_svr_code)
        .order_by(runs.c.gpu_svr_code)
    ).all()
    return [tuple(row) for row in missing]
