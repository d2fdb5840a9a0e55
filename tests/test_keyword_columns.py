"""Fields and env keys named like SQL literals or SQLite's row id land in columns of their own,
on every database, run after run.

Regression: a field or env key named ``false`` (``TRUE`` too) failed every chunk holding it on
SQLite with "table nsml_etl_stage has no column named false": the stage was made by
``CREATE TABLE ... AS SELECT *``, and SQLite names a column called ``true`` or ``false`` in
such a copy ``columnN`` (the expanded name is read as the literal). Found by the hypothesis
test of tests/test_malformed.py."""

from __future__ import annotations

import json

from conftest import export_args, fetch_rows, write_pairs

from nsml_etl.testing.simulator import RawJson

# SQL's literals, SQLite's names for the row id, and keywords that are also values.
KEYS = ["false", "TRUE", "null", "current_date", "current_timestamp", "rowid", "oid", "_rowid_"]


def _body(run_name: str, value: str) -> RawJson:
    """Sent as it is: the simulator drops a dict's fields that start with _ (its own)."""
    body: dict = {"projectId": "p", "runName": run_name, "status": "RUN_STATE_RUNNING"}
    body.update({key: f"{value}-{key}" for key in KEYS})  # undocumented top-level fields
    body["envs"] = {key: f"{value}-env-{key}" for key in KEYS}
    return RawJson(json.dumps(body).encode())


def _export(run_cli, sim, db_url, pairs_file) -> None:
    result = run_cli(*export_args(sim, pairs_file, db_url))
    assert result.exit_code == 0, result.output
    assert "exported 2, failed 0" in result.output


def test_keyword_named_fields_and_env_keys_land(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=0, runs_per_project=0)
    for name in ("1", "2"):
        sim.put_run("p", name, _body(name, "first"))
    pairs_file = write_pairs(tmp_path / "pairs.csv", [("p", "1"), ("p", "2")])
    _export(run_cli, sim, db_url, pairs_file)
    # The second export updates the stored rows: the merge reads the stage again.
    sim.put_run("p", "2", _body("2", "second"))
    _export(run_cli, sim, db_url, pairs_file)

    fields = {
        r["field"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT field, column_name FROM nsml_field_columns")
    }
    envs = {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }
    assert set(fields) == set(envs) == set(KEYS)
    rows = fetch_rows(db_url, "SELECT * FROM nsml_runs ORDER BY run_name")
    assert [r["run_name"] for r in rows] == ["1", "2"]
    for row, value in zip(rows, ("first", "second"), strict=True):
        assert {key: row[column] for key, column in fields.items()} == {
            key: f"{value}-{key}" for key in KEYS
        }
        assert {key: row[column] for key, column in envs.items()} == {
            key: f"{value}-env-{key}" for key in KEYS
        }
