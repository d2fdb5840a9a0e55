"""The store on every database: schema evolution, the mapping tables, concurrent exports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime

import pytest
import sqlalchemy as sa
from conftest import ACCESS_KEY, SECRET_KEY, fetch_rows, write_pairs

from nsml_etl.chunks import write_chunk
from nsml_etl.errors import DatabaseError
from nsml_etl.pairs import Pair
from nsml_etl.transform import flatten_run
from nsml_etl.warehouse import WRITE, Warehouse
from nsml_etl.warehouse.schema import Schema
from nsml_etl.warehouse.store import RunStore

NOW = datetime(2026, 11, 27, 0, 0, 0)


def runs_with_envs(*envs, project="p"):
    return [flatten_run({"envs": e}, Pair(project, str(i)), NOW) for i, e in enumerate(envs)]


def run_threads(count: int, work) -> list[BaseException]:
    """``work(n)`` on ``count`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_case_twins_are_two_mapping_rows_and_two_columns(db_url):
    store = Warehouse.open(db_url, WRITE, table="nsml_runs").store
    write_chunk(store, runs_with_envs({"LR": "1", "lr": "2", "my.key": "3", "my_key": "4"}))
    mapping = {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }
    assert set(mapping) == {"LR", "lr", "my.key", "my_key"}
    assert len(set(mapping.values())) == 4
    (row,) = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    assert {row[mapping[k]] for k in mapping} == {"1", "2", "3", "4"}
    store.engine.dispose()


def test_long_and_unicode_values_survive(db_url):
    store = Warehouse.open(db_url, WRITE, table="nsml_runs").store
    big = "값" * 30_000 + "\n\"'"
    write_chunk(store, runs_with_envs({"BIG": big, "학습률": "0.1"}))
    (row,) = fetch_rows(db_url, "SELECT env_big, envs FROM nsml_runs")
    assert row["env_big"] == big
    store.engine.dispose()


def test_a_mapped_column_missing_after_a_crash_is_added_next_time(db_url):
    engine = Warehouse.open(db_url, WRITE).engine
    store = RunStore(Schema(engine, "nsml_runs"))
    write_chunk(store, runs_with_envs({"A": "1"}))
    # What MySQL's implicit DDL commit can leave: the mapping row, but no column yet.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO nsml_env_columns (table_name, env_key, column_name) "
                "VALUES ('nsml_runs', 'B', 'env_b')"
            )
        )
    write_chunk(RunStore(Schema(engine, "nsml_runs")), runs_with_envs({"B": "2"}))
    (row,) = fetch_rows(db_url, "SELECT env_a, env_b FROM nsml_runs")
    assert row == {"env_a": None, "env_b": "2"}
    engine.dispose()


def test_concurrent_schema_changes_from_threads_agree(db_url):
    engine = Warehouse.open(db_url, WRITE).engine
    keys = [f"KEY_{i}" for i in range(12)]

    def work(n: int) -> None:
        store = RunStore(Schema(engine, "nsml_runs"))
        for start in range(0, 12, 3):
            envs = {k: f"{n}" for k in keys[start : start + 3 + n % 2]}
            write_chunk(store, runs_with_envs(envs, project=f"proj{n}"))

    errors = run_threads(4, work)
    assert not errors, errors
    mapping = fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    assert sorted(r["env_key"] for r in mapping) == sorted(keys)
    assert {r["column_name"] for r in mapping} == {f"env_key_{i}" for i in range(12)}
    engine.dispose()


def test_overlapping_writers_of_the_same_runs_keep_one_current_version(db_url):
    """Three cron jobs exporting the same runs at once, each chunk a new version of every run:
    no deadlock surfaces (chunks are written without the pipeline's retries here), and every
    run ends with exactly one current version and its last written row."""
    engine = Warehouse.open(db_url, WRITE).engine
    write_chunk(RunStore(Schema(engine, "nsml_runs")), runs_with_envs(*({"A": "0"},) * 20))

    def work(n: int) -> None:
        store = RunStore(Schema(engine, "nsml_runs"))
        for round_ in range(6):
            write_chunk(store, runs_with_envs(*({"A": f"{n}-{round_}"},) * 20))

    errors = run_threads(3, work)
    assert not errors, errors
    current = fetch_rows(
        db_url,
        "SELECT project_id, run_name, COUNT(*) AS n FROM nsml_run_history "
        "WHERE valid_to IS NULL GROUP BY project_id, run_name",
    )
    assert len(current) == 20 and {r["n"] for r in current} == {1}
    versions = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_history")
    assert versions[0]["n"] == 20 * (1 + 3 * 6)  # every write changed env_a
    assert {r["env_a"] for r in fetch_rows(db_url, "SELECT env_a FROM nsml_runs")} <= {
        f"{n}-5" for n in range(3)
    }
    engine.dispose()


def test_two_export_processes_into_one_table(db_url, make_simulator, tmp_path):
    """Overlapping cron jobs: disjoint projects, the same new env keys, one table."""
    sim = make_simulator(projects=4, runs_per_project=15)
    projects = list(sim.data)
    pair_files = []
    for n, chosen in enumerate((projects[:2], projects[2:])):
        pairs = [p for p in sim.pairs() if p[0] in chosen]
        pair_files.append(write_pairs(tmp_path / f"pairs{n}.csv", pairs))
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nsml_etl.cli",
                "export",
                "--pairs",
                str(path),
                "--db",
                db_url,
                "--base-url",
                sim.base_url,
                "--chunk-size",
                "2",
                "--concurrency",
                "4",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in pair_files
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
        assert "Summary: exported 30, failed 0" in out
    rows = fetch_rows(db_url, "SELECT project_id, run_name, envs FROM nsml_runs")
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(sim.pairs())
    mapping = fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    expected_keys = {k for p in sim.pairs() for k in (sim.run(*p).get("envs") or {})}
    assert sorted(r["env_key"] for r in mapping) == sorted(expected_keys)
    assert len({r["column_name"] for r in mapping}) == len(mapping)


def _server_url(kind):
    from conftest import REQUIRE_SERVERS, SERVER_URL_ENV

    url = os.environ.get(SERVER_URL_ENV[kind])
    if not url:
        if REQUIRE_SERVERS:
            pytest.fail(f"{SERVER_URL_ENV[kind]} is not set")
        pytest.skip(f"{SERVER_URL_ENV[kind]} is not set")
    return sa.make_url(url)


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("mysql", {"password": "wrong-pw-123"}, "Access denied"),
        ("mysql", {"database": "no_such_db_nsml"}, "Unknown database"),
        ("postgresql", {"database": "no_such_db_nsml"}, "does not exist"),
        ("postgresql", {"username": "no_such_role", "password": "wrong-pw-123"}, "does not exist"),
    ],
)
def test_bad_server_credentials_or_database_exit_4_naming_the_host(
    run_cli, credentials, simulator, tmp_path, kind, change, message
):
    url = _server_url(kind).set(**change).render_as_string(hide_password=False)
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", url, "--base-url", simulator.base_url
    )
    assert result.exit_code == 4
    assert "127.0.0.1" in result.stderr and message in result.stderr
    assert "wrong-pw-123" not in result.output
    assert simulator.stats.requests == 0


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(DatabaseError, match=r"pip install 'nsml-etl\[postgres\]'"):
        Warehouse.open("postgresql://u@127.0.0.1/db", WRITE)
    with pytest.raises(DatabaseError, match=r"use postgresql\+psycopg://"):
        Warehouse.open("postgresql+psycopg2://u@127.0.0.1/db", WRITE)
