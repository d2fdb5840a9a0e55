"""Which tables nsml-etl writes to: a table it did not make is refused and left as it was, our
own tables and view names cannot be chosen as --table, and every runs table gets its own views."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import fetch_rows, write_pairs

from nsml_etl.columnnames import MAX_IDENTIFIER_LENGTH
from nsml_etl.tablenames import (
    BATCHES_TABLE,
    ENV_COLUMNS_TABLE,
    FAILURES_TABLE,
    FIELD_COLUMNS_TABLE,
    HISTORY_TABLE,
    RESERVED_TABLES,
    STAGE_TABLE,
    default_view_names,
    view_bases,
    view_name,
)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# Tables (and a view) named nsml_runs that another tool made, and what the refusal says.
FOREIGN = {
    "id_key": (
        "CREATE TABLE nsml_runs (id INTEGER PRIMARY KEY, name VARCHAR(100))",
        ["its primary key is (id), not (project_id, run_name)"],
    ),
    "no_key": (
        "CREATE TABLE nsml_runs (project_id VARCHAR(100), run_name VARCHAR(100))",
        ["its primary key is missing"],
    ),
    "types": (
        "CREATE TABLE nsml_runs (project_id VARCHAR(100) NOT NULL, "
        "run_name VARCHAR(100) NOT NULL, gpu_svr_code VARCHAR(20), "
        "fetched_at VARCHAR(40), PRIMARY KEY (project_id, run_name))",
        [
            "column gpu_svr_code is VARCHAR(20), not an integer type",
            "column fetched_at is VARCHAR(40), not a date and time type",
        ],
    ),
    "view": ("CREATE VIEW nsml_runs AS SELECT 1 AS x", ["it is a view"]),
}


def schema(db_url: str) -> dict:
    """Every table and view with its columns and primary key, to compare before and after."""
    engine = sa.create_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        tables = {
            name: (
                [(c["name"], repr(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                inspector.get_pk_constraint(name)["constrained_columns"],
            )
            for name in inspector.get_table_names()
        }
        return {"tables": tables, "views": sorted(inspector.get_view_names())}
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_table_we_did_not_make_is_refused_and_left_alone(
    run_cli, credentials, simulator, db_url, tmp_path, kind
):
    ddl, reasons = FOREIGN[kind]
    if db_url.startswith("duckdb"):  # DuckDB keeps no length: VARCHAR(20) is VARCHAR
        reasons = [re.sub(r"\(\d+\)", "", reason) for reason in reasons]
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


def test_our_own_tables_and_views_are_reserved():
    tables = {
        ENV_COLUMNS_TABLE,
        FIELD_COLUMNS_TABLE,
        BATCHES_TABLE,
        FAILURES_TABLE,
        HISTORY_TABLE,
        STAGE_TABLE,
    }
    assert tables <= RESERVED_TABLES
    # The view names come from the files in sql/, whatever files there are.
    files = {p.name.split(".")[0] for p in SQL_DIR.glob("*.sql")}
    assert set(view_bases()) == files
    assert default_view_names() == files


@pytest.mark.parametrize(
    "table", sorted(RESERVED_TABLES | default_view_names() | {"team__runs", "a__active_runs"})
)
def test_reserved_table_names_exit_2(run_cli, tmp_path, table):
    db = tmp_path / "runs.db"
    result = run_cli("views", "--db", f"sqlite:///{db}", "--table", table)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--table': " in result.stderr
    assert ("choose another name" in result.stderr) != ("must not contain '__'" in result.stderr)
    assert not db.exists()


@pytest.mark.parametrize("source", ["env", "config"])
def test_reserved_names_are_refused_from_env_and_config_too(
    run_cli, credentials, simulator, monkeypatch, sqlite_url, tmp_path, source
):
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    args = ["export", "--pairs", str(pairs), "--db", sqlite_url, "--base-url", simulator.base_url]
    if source == "env":
        monkeypatch.setenv("NSML_ETL_TABLE", "nsml_etl_stage")
        where = "NSML_ETL_TABLE"
    else:
        config = tmp_path / "etl.toml"
        config.write_text('table = "nsml_active_runs"\n')
        args += ["--config", str(config)]
        where = str(config)
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert where in result.stderr and "choose another name" in result.stderr
    assert simulator.stats.requests == 0


def test_view_names_per_table():
    bases = view_bases()
    assert all(b.startswith("nsml_") and "__" not in b for b in bases)  # what the rule needs
    assert view_name("nsml_runs", "nsml_active_runs") == "nsml_active_runs"
    assert view_name("team_a", "nsml_active_runs") == "team_a__active_runs"
    # Long table names are cut short with a hash: within the limit, and still distinct.
    long_a, long_b = "t" * 60 + "_aa", "t" * 60 + "_bb"
    names = [view_name(t, b) for t in (long_a, long_b, "nsml_runs", "team_a") for b in bases]
    assert len(set(names)) == len(names)
    assert max(len(n) for n in names) <= MAX_IDENTIFIER_LENGTH
    assert all("__" in n for n in names if not n.startswith("nsml_"))


def load(run_cli, db_url, path, bodies, *args):
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    result = run_cli("load", str(path), "--db", db_url, *args)
    assert result.exit_code == 0, result.output


def test_each_table_has_its_own_views(run_cli, db_url, tmp_path):
    load(
        run_cli,
        db_url,
        tmp_path / "a.jsonl",
        [{"projectId": "p", "runName": "1", "status": "RUN_STATE_RUNNING", "creator": "alice"}],
    )
    load(
        run_cli,
        db_url,
        tmp_path / "b.jsonl",
        [
            {"projectId": "q", "runName": str(i), "status": "RUN_STATE_RUNNING", "creator": "bob"}
            for i in range(3)
        ],
        "--table",
        "team_a",
    )
    bases = view_bases()
    default = run_cli("views", "--db", db_url)
    team = run_cli("views", "--db", db_url, "--table", "team_a")
    assert default.exit_code == 0 and team.exit_code == 0, (default.output, team.output)
    assert {line.split(":")[0] for line in team.stdout.splitlines()} == {
        f"team_a__{b.removeprefix('nsml_')}" for b in bases
    }
    assert "team_a__active_runs: which runs are still going" in team.stdout

    # Creating team_a's views left the default table's alone, and each reads its own table.
    assert fetch_rows(db_url, "SELECT creator, runs FROM nsml_creator_activity") == [
        {"creator": "alice", "runs": 1}
    ]
    assert fetch_rows(db_url, "SELECT creator, runs FROM team_a__creator_activity") == [
        {"creator": "bob", "runs": 3}
    ]
    (fresh,) = fetch_rows(db_url, "SELECT * FROM team_a__export_freshness")
    assert fresh["runs"] == 3 and fresh["last_successful_export"] is not None
    report = run_cli("report", "--db", db_url, "--table", "team_a", "--format", "json")
    assert report.exit_code == 0, report.output
    sections = json.loads(report.stdout)  # keyed by the view's file name, for every table
    assert [r["creator"] for r in sections["nsml_creator_activity"]["rows"]] == ["bob"]

    long_table = "t" * 63  # views need their table (a mistyped --table is exit 4)
    load(
        run_cli,
        db_url,
        tmp_path / "c.jsonl",
        [{"projectId": "r", "runName": "1"}],
        "--table",
        long_table,
    )
    result = run_cli("views", "--db", db_url, "--table", long_table)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(db_url)
    views = set(sa.inspect(engine).get_view_names())
    engine.dispose()
    assert {view_name(t, b) for t in ("nsml_runs", "team_a", long_table) for b in bases} == views
