"""The `report` command people can rely on (issue 15): what it reads, what it prints in each
format, and the HTML page. The views themselves are tested in test_views.py."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import table_names

# -- a database that is not one of ours -------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "views"])
def test_a_mistyped_sqlite_path_is_exit_4_and_creates_nothing(run_cli, tmp_path, command):
    (tmp_path / "nsml_runs.db").write_bytes(b"")  # the file the user meant
    typo = tmp_path / "nsml_run.db"
    result = run_cli(command, "--db", f"sqlite:///{typo}")
    assert result.exit_code == 4, result.output
    assert f"no nsml-etl tables in SQLite database {typo}: the file does not exist" \
        in result.stderr
    assert f"did you mean {tmp_path / 'nsml_runs.db'}?" in result.stderr
    assert "Traceback" not in result.output
    assert not typo.exists()  # regression: it was created, with every table, and exit 0

    elsewhere = tmp_path / "nowhere.db"
    result = run_cli(command, "--db", f"sqlite:///{elsewhere}")
    assert result.exit_code == 4 and "check --db" in result.stderr
    assert not elsewhere.exists()


@pytest.mark.parametrize("command", ["report", "views"])
def test_a_database_without_our_tables_is_exit_4_and_left_alone(run_cli, db_url, command):
    if db_url.startswith("sqlite"):  # an existing SQLite file with somebody else's table
        path = db_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    before = table_names(db_url)
    result = run_cli(command, "--db", db_url)
    assert result.exit_code == 4, result.output
    assert "Error: no nsml-etl tables in " in result.stderr
    assert "check --db and --table, or run export or load first" in result.stderr
    assert table_names(db_url) == before


def test_a_mistyped_table_names_the_tables_there(run_cli, sqlite_url, tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"projectId": "p", "runName": "1"}\n')
    assert run_cli("load", str(runs), "--db", sqlite_url, "--table", "team_a").exit_code == 0
    before = table_names(sqlite_url)
    for command in ("report", "views"):
        result = run_cli(command, "--db", sqlite_url, "--table", "team_b")
        assert result.exit_code == 4, result.output
        assert "no table team_b in SQLite database" in result.stderr
        assert "its nsml-etl tables: team_a (choose one with --table)" in result.stderr
    assert table_names(sqlite_url) == before
    assert run_cli("report", "--db", sqlite_url, "--table", "team_a").exit_code == 0
