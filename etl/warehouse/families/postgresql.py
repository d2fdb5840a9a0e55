"""PostgreSQL: advisory locks, COPY into an ON COMMIT DROP stage, LATERAL history queries;
text cannot hold NUL and index entries are bounded in bytes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..failures import ErrorKind
from .base import Family, ms_macros, null_safe_pick

# Stored in place of U+0000 in PostgreSQL text columns, which cannot hold it (envs keeps the
# exact value as the JSON escape \u0000). U+FFFD is Unicode's own "character lost" mark.
NUL_REPLACEMENT = "\ufffd"
# PostgreSQL refuses a btree entry over 2704 bytes (a third of a page); the key columns of the
# runs table and the history index share one entry with the table name and a timestamp.
POSTGRES_INDEX_BYTES = 2600
# A statement gave up waiting for a lock another session holds (lock_timeout): transient, and
# the schema change's own retries look for it.
PG_LOCK_NOT_AVAILABLE = "55P03"


# PostgreSQL's json cannot turn the escape \u0000 into text (its text holds no NUL), and envs
# keeps NUL as that escape: an escape not itself escaped (an even run of backslashes before
# it) reads as U+FFFD, as in the text columns. Rows written before numbers kept their literal
# may hold NaN or Infinity, which is not JSON: read as {} rather than failing the whole view.
_PG_ENVS_JSON = (
    r"CAST(CASE "
    r"WHEN {x} ~ '(:|,|\[)\s*-?(NaN|Infinity)\s*(,|\}|\])' THEN '{}' "
    r"WHEN strpos({x}, '\u0000') > 0 "
    r"THEN regexp_replace({x}, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') "
    r"ELSE {x} END AS json)"
)


@dataclass(frozen=True)
class PostgresFamily(Family):
    name: str = "postgresql"
    max_columns: int = 1600
    label: str = "PostgreSQL"
    stores_any_text: bool = False

    view_now = "(now() AT TIME ZONE 'UTC')"
    view_macros = {
        "envs_json": lambda x: _PG_ENVS_JSON.replace("{x}", x),
        "days_ago": lambda n: f"((now() AT TIME ZONE 'UTC') - INTERVAL '{int(n)} days')",
        "week_start": lambda x: f"CAST(date_trunc('week', {x}) AS date)",
        "next_week": lambda w: f"CAST({w} + 7 AS date)",
        "days_before": lambda x, n: f"({x} - INTERVAL '{int(n)} days')",
        **ms_macros(
            lambda x: f"CAST(ROUND(EXTRACT(EPOCH FROM {x}) * 1000) AS BIGINT)",
            lambda m: f"(TIMESTAMP '1970-01-01 00:00:00' + ({m}) * INTERVAL '1 millisecond')",
        ),
        "later": null_safe_pick(lambda a, b: f"{a} >= {b}"),
        "earlier": null_safe_pick(lambda a, b: f"{a} <= {b}"),
        "int_div": lambda a, b: f"(({a}) / ({b}))",
    }

    def write_refusal(self, conn: Connection) -> str | None:
        if conn.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "on":
            return (
                "transactions are read-only here (default_transaction_read_only, "
                "or a standby server)"
            )
        return None

    def key_problem(self, project_id: str, run_name: str) -> str | None:
        if "\x00" in project_id or "\x00" in run_name:
            return "project id or run name holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(project_id) + len(run_name) > POSTGRES_INDEX_BYTES // 4:  # else it surely fits
            size = len(project_id.encode("utf-8", "surrogatepass")) + len(
                run_name.encode("utf-8", "surrogatepass")
            )
            if size > POSTGRES_INDEX_BYTES:
                return (
                    f"project id and run name take {size} bytes; PostgreSQL indexes hold "
                    f"at most {POSTGRES_INDEX_BYTES}"
                )
        return None

    def name_problem(self, name: str, what: str) -> str | None:
        if "\x00" in name:
            return f"{what} {name[:60]!r} holds U+0000 (NUL), which PostgreSQL cannot store"
        if len(name) > POSTGRES_INDEX_BYTES // 4:
            size = len(name.encode("utf-8", "surrogatepass"))
            if size > POSTGRES_INDEX_BYTES:
                return (
                    f"{what} {name[:40]!r}... takes {size} bytes; PostgreSQL indexes hold "
                    f"at most {POSTGRES_INDEX_BYTES}"
                )
        return None

    def clean_text(self, value: Any) -> Any:
        if type(value) is str and "\x00" in value:
            return value.replace("\x00", NUL_REPLACEMENT)
        return value

    @property
    def cleans_text(self) -> bool:
        return True

    def code_kind(self, orig: BaseException | None) -> ErrorKind | None:
        state = getattr(orig, "sqlstate", None)
        if not state:
            return None
        if state[:2] in ("08", "57") or state in ("40001", "40P01", PG_LOCK_NOT_AVAILABLE, "53300"):
            return "transient"  # connection, shutdown, serialization, deadlock, lock timeout
        if state[:2] in ("22", "23", "54"):  # data exception, integrity, program limit
            return "data"
        return "other"

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return getattr(getattr(exc, "orig", None), "sqlstate", None) == PG_LOCK_NOT_AVAILABLE

    @contextmanager
    def table_lock(self, conn: Connection, key: int, table: str) -> Iterator[None]:
        # A transaction-level advisory lock: released by the commit or rollback.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield

    @contextmanager
    def bounded_lock_waits(self, conn: Connection, seconds: float) -> Iterator[None]:
        # Local: it ends with the transaction.
        conn.execute(
            sa.text("SELECT set_config('lock_timeout', :ms, true)"),
            {"ms": str(max(1, round(seconds * 1000)))},
        )
        yield

    def create_stage(self, conn: Connection, stage: str, runs: str) -> None:
        # Dropped at commit; a rollback drops it too.
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {stage} (LIKE {runs}) ON COMMIT DROP")

    def drop_stage(self, conn: Connection, stage: str) -> None:
        pass  # the commit drops it (ON COMMIT DROP)

    def fill_stage(
        self,
        conn: Connection,
        stage: str,
        columns: list[str],
        rows: list[list[Any]],
        timestamps: list[int],
    ) -> None:
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        driver = conn.connection.driver_connection
        assert driver is not None  # a live connection of the engine's pool
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    # LATERAL ... LIMIT 1 walks the indexes once per staged run. A plain join was planned from
    # statistics taken while the tables were still empty (a hash join over the whole history:
    # 50x slower in the middle of a large load).

    def changed_runs_sql(
        self, stage: str, runs: str, history: str, same_run: str, current: str, differs: str
    ) -> str:
        return (
            f"SELECT h.id, s.project_id, s.run_name, s.fetched_at FROM {stage} s "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE {same_run} LIMIT 1) r "
            f"CROSS JOIN LATERAL (SELECT h.id FROM {history} h WHERE {current} LIMIT 1) h "
            f"WHERE {differs}"
        )

    def unversioned_sql(self, stage: str, history: str, current: str) -> str:
        return (
            f"{stage} s LEFT JOIN LATERAL (SELECT h.id FROM {history} h "  # noqa: S608
            f"WHERE {current} LIMIT 1) h ON true WHERE h.id IS NULL"
        )
