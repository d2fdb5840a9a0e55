"""Which tables nsml-etl writes to: a table it did not make is refused and left as it was, our
own tables and view names cannot be chosen as --table, and every runs table gets its own views."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from conftest import fetch_rows, write_pairs

# Tables (and a view) named nsml_runs that another tool made, and what the refusal says.
FOREIGN = {
    "id_key": ("CREATE TABLE nsml_runs (id INTEGER PRIMARY KEY, name VARCHAR(100))",
               ["its primary key is (id), not (project_id, run_name)"]),
    "no_key": ("CREATE TABLE nsml_runs (project_id VARCHAR(100), run_name VARCHAR(100))",
               ["its primary key is missing"]),
    "types": ("CREATE TABLE nsml_runs (project_id VARCHAR(100) NOT NULL, "
              "run_name VARCHAR(100) NOT NULL, gpu_svr_code VARCHAR(20), "
              "fetched_at VARCHAR(40), PRIMARY KEY (project_id, run_name))",
              ["column gpu_svr_code is VARCHAR(20), not an integer type",
               "column fetched_at is VARCHAR(40), not a date and time type"]),
    "view": ("CREATE VIEW nsml_runs AS SELECT 1 AS x", ["it is a view"]),
}


def schema(db_url: str) -> dict:
    """Every table and view with its columns and primary key, to compare before and after."""
    engine = sa.create_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        tables = {
            name: ([(c["name"], repr(c["type"]), c["nullable"])
                    for c in inspector.get_columns(name)],
                   inspector.get_pk_constraint(name)["constrained_columns"])
            for name in inspector.get_table_names()
        }
        return {"tables": tables, "views": sorted(inspector.get_view_names())}
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_table_we_did_not_make_is_refused_and_left_alone(run_cli, credentials, simulator,
                                                           db_url, tmp_path, kind):
    ddl, reasons = FOREIGN[kind]
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    engine.dispose()
    before = schema(db_url)
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps({"projectId": "p", "runName": "1"}) + "\n")
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:2])
    commands = {
        "export": ("export", "--pairs", str(pairs), "--base-url", simulator.base_url),
        "load": ("load", str(runs)),
        "views": ("views",),
        "report": ("report",),
    }
    for name, args in commands.items():
        result = run_cli(*args, "--db", db_url)
        assert result.exit_code == 4, (name, result.output)
        message = result.stderr
        assert "table nsml_runs exists but is not an nsml-etl table: " in message, name
        assert all(reason in message for reason in reasons), (name, message)
        assert "choose another --table" in message
        assert "Traceback" not in result.output
    assert simulator.stats.requests == 0
    assert schema(db_url) == before  # not even the bookkeeping tables were created

    # Another table in the same database is ours to use.
    result = run_cli("load", str(runs), "--db", db_url, "--table", "mine")
    assert result.exit_code == 0, result.output
    assert fetch_rows(db_url, "SELECT run_name FROM mine") == [{"run_name": "1"}]
