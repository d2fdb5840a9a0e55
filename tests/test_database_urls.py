"""Database URLs as other tools print them, and messages that name what the caller gave."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import _server_database, fetch_rows, write_pairs

import nsml_etl


@pytest.fixture
def pg_url():
    yield from _server_database("postgresql")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgres+psycopg"])
def test_postgres_urls_without_our_driver_name_are_postgresql(
    run_cli, credentials, make_simulator, pg_url, tmp_path, scheme
):
    # Regression: postgres:// (what libpq, Heroku and dj-database-url print) was "unsupported
    # database 'postgres'", exit 4.
    sim = make_simulator(projects=1, runs_per_project=2)
    url = sa.make_url(pg_url).set(drivername=scheme).render_as_string(hide_password=False)
    assert url.startswith(f"{scheme}://")
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli("export", "--pairs", str(pairs), "--db", url, "--base-url", sim.base_url)
    assert result.exit_code == 0, result.output
    assert len(fetch_rows(pg_url, "SELECT run_name FROM nsml_runs")) == 2
    report = nsml_etl.export(sim.pairs(), db_url=url, base_url=sim.base_url)
    assert report.ok and report.exported == 2
    assert run_cli("check", "--db", url, "--base-url", sim.base_url).exit_code == 0
