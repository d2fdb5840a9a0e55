"""What only DuckDB has: one process at a time per file, and URLs that keep nothing.

The DuckDB rows of every cross-database test come from the db_url fixture (conftest's
DATABASE_KINDS); these are the cases no other database has.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import export_args, fetch_rows, write_pairs

from nsml_etl.warehouse import duckdb_dialect

# A program that keeps the file open, as the DuckDB CLI or a notebook does.
HOLDER = (
    "import duckdb, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('open', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_file_another_program_holds_open_is_exit_4_saying_what_to_do(
    run_cli, credentials, simulator, tmp_path, monkeypatch
):
    db = tmp_path / "runs.duckdb"
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:3])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        monkeypatch.setattr(duckdb_dialect, "OPEN_TIMEOUT_S", 0.5)  # not the minute it waits
        result = run_cli(*export_args(simulator, pairs, f"duckdb:///{db}"))
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith(f"Error: cannot connect to DuckDB database {db}: IO Error")
    assert "another process has the file open" in result.stderr
    assert "Traceback" not in result.output
    # Once the other program has let go, the same export lands every run.
    again = run_cli(*export_args(simulator, pairs, f"duckdb:///{db}"))
    assert again.exit_code == 0, again.output
    rows = fetch_rows(f"duckdb:///{db}", "SELECT project_id, run_name FROM nsml_runs")
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(simulator.pairs()[:3])


@pytest.mark.parametrize("url", ["duckdb://", "duckdb:///", "duckdb:///:memory:"])
def test_a_duckdb_url_that_keeps_nothing_is_a_usage_error(run_cli, credentials, tmp_path, url):
    pairs = write_pairs(tmp_path / "pairs.csv", [("p", "1")])
    result = run_cli("export", "--pairs", str(pairs), "--db", url, "--dry-run")
    assert result.exit_code == 2, result.output
    assert "DuckDB" in result.stderr and "keeps nothing" in result.stderr
