"""Exports side by side: one export per project at the same time, into one existing table, each
bringing env keys the others have not seen (an orchestrator's task mapping, several cron lines).

Regression (issue 20, section 5): on PostgreSQL and MariaDB, three such exports with small
chunks failed two of three with exit 4 "the column mapping of table nsml_runs changed 5 times
while one chunk was written ... run the export again", and none of their runs landed: every
chunk of every export added columns, so a chunk's rows, built before it took the table's lock,
were out of date by the time it had the lock, again and again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime

import pytest
import sqlalchemy as sa
from conftest import ACCESS_KEY, SECRET_KEY, SERVER_URL_ENV, fetch_rows, write_pairs

import nsml_etl
from nsml_etl.chunks import write_chunk
from nsml_etl.pairs import Pair
from nsml_etl.transform import flatten_run
from nsml_etl.warehouse import WRITE, Warehouse
from nsml_etl.warehouse.schema import Schema

EXPORTS = 3
RUNS_PER_EXPORT = 10
NOW = datetime(2026, 11, 27)


def side_by_side_simulator(make_simulator, exports: int, runs: int):
    """One project per export; every run has an env key of its own (``E<export>_<run>``), so
    every chunk of every export gives the table new columns."""
    sim = make_simulator(projects=exports, runs_per_project=runs)
    for n, project in enumerate(sim.data):
        for i, name in enumerate(list(sim.data[project]["runs"])):
            body = sim.run(project, name)
            body["envs"] = {f"E{n}_{i}": f"value {n}-{i}"}
            sim.put_run(project, name, body)
    return sim


def project_pairs(sim) -> list[list[tuple[str, str]]]:
    return [[(p, r) for r in sim.data[p]["runs"]] for p in sim.data]


def start_exports(sim, db_url: str, tmp_path, chunk_size: int) -> list[subprocess.Popen]:
    """``python -m nsml_etl.cli export`` once per project, all started before any ends."""
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    procs = []
    for n, pairs in enumerate(project_pairs(sim)):
        path = write_pairs(tmp_path / f"pairs{n}.csv", pairs)
        command = [
            *(sys.executable, "-m", "nsml_etl.cli", "export", "--pairs", str(path)),
            *("--db", db_url, "--base-url", sim.base_url),
            *("--chunk-size", str(chunk_size), "--concurrency", "2"),
        ]
        procs.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def seed_table(sim, db_url: str) -> None:
    """The table exists before the exports start, as it does for a scheduled job."""
    first = nsml_etl.export(
        pairs=[project_pairs(sim)[0][0]], db_url=db_url, base_url=sim.base_url, concurrency=1
    )
    assert first.ok, first.summary()


def assert_every_run_landed_once(sim, db_url: str, batches: int) -> None:
    """Each run once, its own env key in its own column; one current version each; every
    batch row succeeded."""
    columns = {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }
    rows = [r for r in fetch_rows(db_url, "SELECT * FROM nsml_runs") if r["project_id"] in sim.data]
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(sim.pairs())
    for row in rows:
        ((key, value),) = sim.run(row["project_id"], row["run_name"])["envs"].items()
        assert columns[key] is not None, key
        assert row[columns[key]] == value, (key, row)
    assert len(set(columns.values())) == len(columns)  # one column per key
    current = [
        r
        for r in fetch_rows(
            db_url,
            "SELECT project_id, run_name, COUNT(*) AS n FROM nsml_run_history "
            "WHERE valid_to IS NULL GROUP BY project_id, run_name",
        )
        if r["project_id"] in sim.data
    ]
    assert len(current) == len(rows) and {r["n"] for r in current} == {1}
    statuses = fetch_rows(db_url, "SELECT status FROM nsml_export_batches")
    assert [r["status"] for r in statuses] == ["succeeded"] * batches


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_exports_side_by_side_each_adding_columns_all_succeed(
    db_url, make_simulator, credentials, tmp_path, chunk_size
):
    sim = side_by_side_simulator(make_simulator, EXPORTS, RUNS_PER_EXPORT)
    seed_table(sim, db_url)
    procs = start_exports(sim, db_url, tmp_path, chunk_size)
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
        assert f"Summary: exported {RUNS_PER_EXPORT}, failed 0" in out, out
        assert "Traceback" not in err, err
    assert_every_run_landed_once(sim, db_url, batches=1 + EXPORTS)


def test_python_api_exports_side_by_side_on_threads_all_succeed(
    db_url, make_simulator, credentials
):
    """The same through ``nsml_etl.export``, one export per thread (as an Airflow worker might
    run mapped tasks in one process)."""
    sim = side_by_side_simulator(make_simulator, EXPORTS, RUNS_PER_EXPORT)
    seed_table(sim, db_url)
    reports: dict[int, nsml_etl.ExportReport] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(EXPORTS)

    def export(n: int, pairs: list[tuple[str, str]]) -> None:
        try:
            start.wait()
            reports[n] = nsml_etl.export(
                pairs=pairs, db_url=db_url, base_url=sim.base_url, chunk_size=1, concurrency=2
            )
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [
        threading.Thread(target=export, args=(n, pairs))
        for n, pairs in enumerate(project_pairs(sim))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for report in reports.values():
        assert report.ok and report.exit_code == 0, report.summary()
        assert report.exported == RUNS_PER_EXPORT
    assert_every_run_landed_once(sim, db_url, batches=1 + EXPORTS)


def test_a_chunk_adopts_every_column_other_exports_add_while_it_waits(
    db_url, make_simulator, credentials, run_cli, tmp_path, monkeypatch
):
    """Deterministic: after every schema step of this export's chunks, another export adds a
    column before the chunk is written (once, instead, leaving a mapping row whose column it
    never added, as a MySQL export that died between the two does). Each chunk is written with
    the columns it finds under the table's lock; the orphan's column is added first."""
    sim = side_by_side_simulator(make_simulator, 1, RUNS_PER_EXPORT)
    seed_table(sim, db_url)
    other = Warehouse.open(db_url, WRITE, table="nsml_runs").store
    original = Schema.prepare
    others: list[int] = []

    def prepare_then_another_export_writes(self, keys, fields):
        mapping = original(self, keys, fields)
        if self is not other.schema:
            n = len(others)
            others.append(n)
            if n == 1:
                with other.engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            "INSERT INTO nsml_env_columns (table_name, env_key, column_name) "
                            "VALUES ('nsml_runs', 'ORPHAN', 'env_orphan')"
                        )
                    )
            else:
                run = flatten_run({"envs": {f"OTHER_{n}": str(n)}}, Pair("other", str(n)), NOW)
                write_chunk(other, [run])
        return mapping

    monkeypatch.setattr(Schema, "prepare", prepare_then_another_export_writes)
    path = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(
        *("export", "--pairs", str(path), "--db", db_url, "--base-url", sim.base_url),
        *("--chunk-size", "5", "--concurrency", "1"),
    )
    other.engine.dispose()
    assert result.exit_code == 0, result.output
    assert f"Summary: exported {RUNS_PER_EXPORT}, failed 0" in result.stdout
    assert_every_run_landed_once(sim, db_url, batches=2)
    rows = fetch_rows(db_url, "SELECT * FROM nsml_runs WHERE project_id = 'other'")
    assert sorted(r["run_name"] for r in rows) == sorted(str(n) for n in others if n != 1)
    assert all(r[f"env_other_{r['run_name']}"] == r["run_name"] for r in rows)
    assert "env_orphan" in rows[0]  # added by this export's schema step


# Regression: MySQL's GET_LOCK names are one namespace for the whole server, and the table's
# lock was named after the table alone, so exports into nsml_runs of two databases on one
# MariaDB server took turns (every test database's exports queued on one lock), and behind a
# long one, gave up after 60 s with exit 4 "timed out ... waiting for another export's lock"
def test_a_table_of_the_same_name_in_another_database_does_not_share_its_lock(
    db_url, simulator, credentials, run_cli, tmp_path
):
    if db_url.startswith("sqlite"):
        elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    elif db_url.startswith("duckdb"):
        elsewhere = f"duckdb:///{tmp_path / 'elsewhere.duckdb'}"
    else:
        kind = "mysql" if db_url.startswith("mysql") else "postgresql"
        elsewhere = os.environ[SERVER_URL_ENV[kind]]  # the server's own database
    path = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    held = Warehouse.open(elsewhere, WRITE, table="nsml_runs")
    with held.schema.table_lock():  # an export into nsml_runs there, holding its lock throughout
        result = run_cli(
            "export", "--pairs", str(path), "--db", db_url, "--base-url", simulator.base_url
        )
    held.close()
    assert result.exit_code == 0, result.output
    stored = fetch_rows(db_url, "SELECT project_id, run_name FROM nsml_runs")
    assert sorted((r["project_id"], r["run_name"]) for r in stored) == sorted(simulator.pairs())
    assert [r["status"] for r in fetch_rows(db_url, "SELECT status FROM nsml_export_batches")] == [
        "succeeded"
    ]
