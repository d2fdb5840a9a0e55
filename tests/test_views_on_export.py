"""export and load create the reporting views a database lacks (BI tools find them after the
first export), views replaces them all, and on PostgreSQL each view carries its question."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from conftest import _server_database, export_args, fetch_rows, write_pairs

from nsml_etl.reporting.views import load_views
from nsml_etl.tablenames import view_bases


def view_names(db_url: str) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        return set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()


def execute(db_url: str, *statements: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def load_runs(run_cli, db_url, tmp_path, *extra):
    path = tmp_path / "runs.jsonl"
    path.write_text(
        json.dumps({"projectId": "p", "runName": "1", "status": "RUN_STATE_COMPLETED"}) + "\n"
    )
    return run_cli("load", str(path), "--db", db_url, *extra)


def test_the_first_export_creates_every_view(run_cli, credentials, simulator, db_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = run_cli(*export_args(simulator, pairs_file, db_url, "--log-format", "json"))
    assert result.exit_code == 0, result.stderr
    assert view_names(db_url) == set(view_bases())
    finished = [json.loads(line) for line in result.stderr.splitlines()][-1]
    assert (finished["views_created"], finished["views_error"]) == (len(view_bases()), None)
    runs = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_timeline")
    assert runs == [{"n": len(simulator.pairs())}]
    again = run_cli(*export_args(simulator, pairs_file, db_url, "--log-format", "json"))
    assert [json.loads(line) for line in again.stderr.splitlines()][-1]["views_created"] == 0


def test_load_creates_only_the_missing_views(run_cli, db_url, tmp_path):
    assert load_runs(run_cli, db_url, tmp_path).exit_code == 0
    # one view gone, one replaced by a stand-in of the user's: load makes the first again
    # and leaves the second alone; views replaces it
    execute(
        db_url,
        "DROP VIEW nsml_active_runs",
        "DROP VIEW nsml_runs_per_week",
        "CREATE VIEW nsml_runs_per_week AS SELECT 1 AS mine",
    )
    result = load_runs(run_cli, db_url, tmp_path, "--log-format", "json")
    assert [json.loads(line) for line in result.stderr.splitlines()][-1]["views_created"] == 1
    assert view_names(db_url) == set(view_bases())
    assert fetch_rows(db_url, "SELECT * FROM nsml_runs_per_week") == [{"mine": 1}]
    assert run_cli("views", "--db", db_url).exit_code == 0
    columns = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs_per_week WHERE week IS NULL")
    assert columns == [{"n": 0}]  # the real view again: it has a week column


def test_a_view_that_fails_loses_no_run(run_cli, db_url, tmp_path):
    """A table where a view should be: the view cannot be created; the runs and the batch row
    stand, the summary says what failed and what to run, and the exit code is the runs'."""
    execute(db_url, "CREATE TABLE nsml_active_runs (x INTEGER)")
    result = load_runs(run_cli, db_url, tmp_path)
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("Summary: exported 1, failed 0")
    assert "; the reporting views were not created (creating view nsml_active_runs failed" in (
        summary
    )
    assert summary.endswith("): run nsml-etl views")
    assert fetch_rows(db_url, "SELECT run_name FROM nsml_runs") == [{"run_name": "1"}]
    batches = fetch_rows(db_url, "SELECT status FROM nsml_export_batches")
    assert batches == [{"status": "succeeded"}]
    views = run_cli("views", "--db", db_url)
    assert views.exit_code == 4 and "creating view nsml_active_runs failed" in views.stderr


@pytest.fixture
def postgres_url():
    yield from _server_database("postgresql")


def test_postgresql_views_carry_their_question(run_cli, tmp_path, postgres_url):
    db_url = postgres_url
    assert load_runs(run_cli, db_url, tmp_path).exit_code == 0
    rows = fetch_rows(
        db_url,
        "SELECT c.relname AS name, obj_description(c.oid, 'pg_class') AS comment "
        "FROM pg_class c WHERE c.relkind = 'v' AND c.relname LIKE 'nsml%'",
    )
    quote = sa.create_engine(db_url).dialect.identifier_preparer.quote
    questions = {v.name: v.question for v in load_views("postgresql", "nsml_runs", quote)}
    assert {r["name"]: r["comment"] for r in rows} == questions
    assert all(q.endswith("?") for q in questions.values())
    # views re-creates them with their comments (DROP VIEW drops the comment)
    assert run_cli("views", "--db", db_url).exit_code == 0
    comment = fetch_rows(
        db_url, "SELECT obj_description('nsml_gpu_usage'::regclass, 'pg_class') AS c"
    )
    assert comment == [{"c": questions["nsml_gpu_usage"]}]
