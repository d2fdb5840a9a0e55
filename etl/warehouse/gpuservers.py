"""GPUs per GPU server: ``nsml_gpu_servers(gpu_svr_code, gpus, label)``, filled by users.

The run-hours views turn into GPU-hours only where this table knows a server's GPU count.
nsml-etl never sets one by itself: it starts empty, and rows come from ``nsml-etl gpu-servers
set`` or ``load`` (a TOML file); ``gpu-servers suggest`` reads the counts that servers' names
state (:func:`gpus_in_name`) into such a file for a person to check, and writes nothing. One
table per database, shared by every runs table (a server code means the same machine
whichever table a run landed in).
"""

from __future__ import annotations

import re
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


def count_servers_without_gpus(engine: Engine, runs_table: str) -> int:
    """How many GPU servers ``runs_table`` has runs on without a GPU count (export's summary
    says it). Reads only; one pass over the runs' server codes (about 40 ms for 25,000 runs
    on SQLite), without the names that :func:`list_servers` reads."""
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(runs_table):
                return 0
            runs = sa.table(runs_table, sa.column("gpu_svr_code"))
            codes = (
                sa.select(runs.c.gpu_svr_code)
                .where(runs.c.gpu_svr_code.is_not(None))
                .distinct()
                .subquery()
            )
            query = sa.select(sa.func.count()).select_from(codes)
            if inspector.has_table(GPU_SERVERS_TABLE):
                servers = gpu_servers_table()
                query = query.where(
                    ~sa.exists().where(servers.c.gpu_svr_code == codes.c.gpu_svr_code)
                )
            return int(conn.execute(query).scalar_one())
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


# What a server's name (eng_full_name) says about its GPUs, for ``gpu-servers suggest``. The
# names seen: "[GPU] A100 2EA, 24vCPU, 240GB Mem", "1 x NVIDIA A100", "[Notebook] 4vCPU, 16GB
# Mem". A count is only read where the name states one next to a GPU word; a CPU-only tag
# with no GPU word is 0; anything else is no guess.
_GPU_WORD = (
    r"(?:NVIDIA|GPUs?|Tesla|RTX|GTX|Quadro|[AHLPTV]\d{1,3}[A-Za-z]{0,4}"
    r"|A\d{4}|L40S?|B\d{3}|GB\d{3})"
)
_COUNT_PATTERNS = (
    # "A100 2EA", "V100 1 EA", "GPU 2개": a count in units (EA, 개) after a GPU word
    re.compile(rf"(?<![\w.]){_GPU_WORD}\b[^,;/\d]{{0,20}}?(\d{{1,4}})\s*(?:EA\b|개)", re.I),
    # "1 x NVIDIA A100", "8x A100", "2 * V100"
    re.compile(rf"(?<![\w.])(\d{{1,4}})\s*[x×*]\s*{_GPU_WORD}\b", re.I),
    # "A100 x 2", "V100*4"
    re.compile(rf"(?<![\w.]){_GPU_WORD}\s*[x×*]\s*(\d{{1,4}})(?![\w.])", re.I),
    # "8 GPUs", "2 GPU", "4-GPU"
    re.compile(r"(?<![\w.])(\d{1,4})\s*-?\s*GPUs?\b", re.I),
)
_CPU_ONLY_TAG = re.compile(r"^\s*\[(?:Notebook|CPU)\]", re.I)
_ANY_GPU_WORD = re.compile(rf"(?<![\w.]){_GPU_WORD}\b", re.I)


def gpus_in_name(name: str | None) -> int | None:
    """The GPU count a server's name states, or None when it does not say (no guess).

    ``[GPU] A100 2EA, 24vCPU, 240GB Mem`` -> 2; ``1 x NVIDIA A100`` -> 1; ``[Notebook] 4vCPU``
    -> 0 (a CPU-only tag and no GPU word); a name with two different counts, a count beyond
    :data:`MAX_GPUS`, or none at all -> None. Pure; never raises."""
    if not isinstance(name, str) or not name.strip():
        return None
    counts = {
        int(match.group(1)) for pattern in _COUNT_PATTERNS for match in pattern.finditer(name)
    }
    if len(counts) == 1:
        (count,) = counts
        return count if count <= MAX_GPUS else None
    if not counts and _CPU_ONLY_TAG.match(name) and not _ANY_GPU_WORD.search(name):
        return 0
    return None


@dataclass(frozen=True)
class Suggestion:
    """One server without a GPU count: its stored names, and the count they state (None: they
    do not say, or disagree)."""

    gpu_svr_code: int
    names: tuple[str, ...]
    runs: int
    gpus: int | None


def suggest_servers(engine: Engine, runs_table: str) -> list[Suggestion]:
    """A suggestion per server that ``runs_table`` has runs on and that has no GPU count,
    read from the stored ``eng_full_name``s (every distinct name of the server must state the
    same count). Reads only: it creates no table, nor a SQLite file (callers check that)."""
    try:
        with engine.connect() as conn:
            servers = gpu_servers_table()
            known = sa.inspect(conn).has_table(servers.name)
            if not sa.inspect(conn).has_table(runs_table):
                return []
            runs = sa.table(runs_table, sa.column("gpu_svr_code"), sa.column("eng_full_name"))
            query = sa.select(runs.c.gpu_svr_code, runs.c.eng_full_name, sa.func.count())
            if known:
                query = query.select_from(
                    runs.outerjoin(servers, servers.c.gpu_svr_code == runs.c.gpu_svr_code)
                ).where(servers.c.gpu_svr_code.is_(None))
            rows = conn.execute(
                query.where(runs.c.gpu_svr_code.is_not(None))
                .group_by(runs.c.gpu_svr_code, runs.c.eng_full_name)
                .order_by(runs.c.gpu_svr_code, runs.c.eng_full_name)
            ).all()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading {GPU_SERVERS_TABLE} failed: {first_line(exc)}") from exc
    by_code: dict[int, list[tuple[str | None, int]]] = {}
    for code, name, count in rows:
        by_code.setdefault(int(code), []).append((name, int(count)))
    return [_suggestion(code, named) for code, named in by_code.items()]


def _suggestion(code: int, named: list[tuple[str | None, int]]) -> Suggestion:
    names = tuple(name for name, _ in named if name is not None)
    counts = {gpus_in_name(name) for name in names}
    gpus = counts.pop() if len(counts) == 1 else None
    return Suggestion(code, names, sum(runs for _, runs in named), gpus)


def suggestions_toml(suggestions: Iterable[Suggestion]) -> str:
    """A file for ``gpu-servers load``: one ``CODE = { gpus = N, label = "name" }`` line per
    server whose names state a count; the others as comments, for a person to fill in."""
    lines = [
        "# GPU counts read from the servers' names (eng_full_name) by 'nsml-etl gpu-servers",
        "# suggest'. Check them, fill in or delete the commented servers, then:",
        "#   nsml-etl gpu-servers load FILE",
        "[servers]",
    ]
    unknown = []
    for suggestion in suggestions:
        label = " / ".join(suggestion.names)
        if suggestion.gpus is None:
            unknown.append(suggestion)
            continue
        lines.append(
            f"{suggestion.gpu_svr_code} = {{ gpus = {suggestion.gpus}, "
            f"label = {_toml_string(label)} }}  # {_runs(suggestion.runs)}"
        )
    if unknown:
        lines.append("")
        lines.append("# No count in the name (or names that disagree): set GPUS by hand.")
        for suggestion in unknown:
            names = _comment_text(" / ".join(suggestion.names)) or "(no name stored)"
            lines.append(f"# {suggestion.gpu_svr_code} = GPUS  # {names}; {_runs(suggestion.runs)}")
    return "\n".join(lines) + "\n"


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def _comment_text(text: str) -> str:
    """``text`` fit for a TOML comment, which takes no control character but the tab."""
    return "".join(
        " " if ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF else c for c in text
    )


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: the quote, the backslash and every control character
    escaped (TOML wants DEL escaped too, which json.dumps leaves), a lone surrogate (never
    valid UTF-8) as U+FFFD."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
