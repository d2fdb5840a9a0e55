"""nsml_run_history: a new version whenever a run's content changes, nothing when it does not."""

from __future__ import annotations

import json

import pytest
from conftest import fetch_rows, write_pairs


def export(run_cli, sim, pairs_file, db_url):
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
    )
    assert result.exit_code == 0, result.output


def test_history_across_three_exports(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=4)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    project = next(iter(sim.data))
    key = (project, "2")

    def change(**fields):
        body = sim.run(*key)
        body.update(fields)
        sim.put_run(*key, body)

    change(status="RUN_STATE_IN_PROGRESS")
    export(run_cli, sim, pairs_file, db_url)
    export(run_cli, sim, pairs_file, db_url)  # nothing changed: no new versions
    rows = fetch_rows(db_url, "SELECT * FROM nsml_run_history")
    assert len(rows) == 4 and all(r["valid_to"] is None for r in rows)

    change(status="RUN_STATE_FAILED")
    export(run_cli, sim, pairs_file, db_url)
    change(note="investigated", envs={"LR": "0.5"})
    export(run_cli, sim, pairs_file, db_url)

    versions = fetch_rows(
        db_url,
        "SELECT * FROM nsml_run_history WHERE project_id = :p "
        "AND run_name = :r ORDER BY valid_from",
        {"p": key[0], "r": key[1]},
    )
    assert [v["status"] for v in versions] == [
        "RUN_STATE_IN_PROGRESS",
        "RUN_STATE_FAILED",
        "RUN_STATE_FAILED",
    ]
    assert versions[0]["valid_to"] == versions[1]["valid_from"]
    assert versions[1]["valid_to"] == versions[2]["valid_from"]
    assert versions[2]["valid_to"] is None
    # superseded versions keep the row as it was; the current one lives in nsml_runs
    assert json.loads(versions[0]["content"])["status"] == "RUN_STATE_IN_PROGRESS"
    old = json.loads(versions[1]["content"])
    assert old["status"] == "RUN_STATE_FAILED" and old.get("note") != "investigated"
    assert versions[2]["content"] is None
    batches = [
        b["id"] for b in fetch_rows(db_url, "SELECT id FROM nsml_export_batches ORDER BY id")
    ]
    assert [v["batch_id"] for v in versions] == [batches[0], batches[2], batches[3]]
    # the other runs never changed: one version each
    others = fetch_rows(
        db_url, "SELECT COUNT(*) AS n FROM nsml_run_history WHERE run_name <> :r", {"r": key[1]}
    )
    assert others == [{"n": 3}]


def test_replayed_file_with_a_run_twice_keeps_one_current_version(run_cli, db_url, tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(
        "".join(
            json.dumps(b) + "\n"
            for b in [
                {"projectId": "p", "runName": "1", "status": "RUN_STATE_IN_PROGRESS"},
                {"projectId": "p", "runName": "1", "status": "RUN_STATE_COMPLETED"},
            ]
        )
    )
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert fetch_rows(db_url, "SELECT status FROM nsml_runs") == [{"status": "RUN_STATE_COMPLETED"}]
    current = fetch_rows(db_url, "SELECT status FROM nsml_run_history WHERE valid_to IS NULL")
    assert current == [{"status": "RUN_STATE_COMPLETED"}]


def test_every_kind_of_change_is_a_version_and_nothing_else_is(run_cli, db_url, tmp_path):
    """The stored and the incoming row are compared column by column in the database: a
    change of case or a trailing space (which MySQL's default collation ignores), a value that
    becomes NULL, an env key that disappears and an integer all count; a rerun does not."""
    base = {
        "projectId": "p",
        "runName": "1",
        "status": "RUN_STATE_RUNNING",
        "gpuSvrCode": 205,
        "envs": {"A": "x"},
    }
    bodies = [
        base,
        {**base, "note": "Note"},
        {**base, "note": "note"},
        {**base, "note": "note "},
        {**base, "note": "note ", "envs": {}},
        {**base, "note": "note ", "envs": {}},  # the same again: no version
        {**base, "note": "note ", "envs": {}, "gpuSvrCode": 206},
        {**base, "envs": {}, "gpuSvrCode": 206},  # note gone
    ]
    for i, body in enumerate(bodies):
        path = tmp_path / f"runs-{i}.jsonl"
        path.write_text(json.dumps(body) + "\n")
        result = run_cli("load", str(path), "--db", db_url)
        assert result.exit_code == 0, result.output
    versions = fetch_rows(db_url, "SELECT valid_to, content FROM nsml_run_history ORDER BY id")
    assert len(versions) == 7
    assert [v["valid_to"] is None for v in versions] == [False] * 6 + [True]
    notes = [json.loads(v["content"]).get("note") for v in versions[:6]]
    assert notes == [None, "Note", "note", "note ", "note ", "note "]
    assert json.loads(versions[3]["content"])["env_a"] == "x"
    assert "env_a" not in json.loads(versions[4]["content"])
    assert fetch_rows(db_url, "SELECT note, gpu_svr_code, env_a FROM nsml_runs") == [
        {"note": None, "gpu_svr_code": 206, "env_a": None}
    ]


def test_a_history_table_from_before_the_staged_merge_keeps_working(run_cli, db_url, tmp_path):
    """nsml-etl 0.1 made nsml_run_history with a NOT NULL content_hash; loads still land."""
    import sqlalchemy as sa

    if db_url.startswith("duckdb"):
        pytest.skip("nsml-etl wrote no DuckDB table before the staged merge")

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE nsml_run_history (id INTEGER PRIMARY KEY, table_name VARCHAR(64) "
            "NOT NULL, project_id VARCHAR(255) NOT NULL, run_name VARCHAR(255) NOT NULL, "
            "valid_from TIMESTAMP NOT NULL, valid_to TIMESTAMP NULL, batch_id BIGINT, "
            "status TEXT, content_hash VARCHAR(64) NOT NULL, content TEXT)".replace(
                "INTEGER PRIMARY KEY",
                "SERIAL PRIMARY KEY"
                if engine.dialect.name == "postgresql"
                else "BIGINT AUTO_INCREMENT PRIMARY KEY"
                if engine.dialect.name != "sqlite"
                else "INTEGER PRIMARY KEY",
            )
        )
    engine.dispose()
    path = tmp_path / "runs.jsonl"
    for status in ("RUN_STATE_RUNNING", "RUN_STATE_COMPLETED"):
        path.write_text(json.dumps({"projectId": "p", "runName": "1", "status": status}) + "\n")
        result = run_cli("load", str(path), "--db", db_url)
        assert result.exit_code == 0, result.output
    versions = fetch_rows(db_url, "SELECT status, valid_to FROM nsml_run_history ORDER BY id")
    assert [v["status"] for v in versions] == ["RUN_STATE_RUNNING", "RUN_STATE_COMPLETED"]
    assert versions[0]["valid_to"] is not None and versions[1]["valid_to"] is None
