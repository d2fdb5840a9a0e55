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


@pytest.mark.parametrize(
    ("url", "error", "detail"),
    [
        (
            "oracle://etl:pw-s3cret@db/x",
            nsml_etl.DatabaseError,
            "oracle://etl:***@db/x: unsupported",
        ),
        ("not a url", nsml_etl.InputError, "'not a url' is not a database URL"),
    ],
)
def test_a_bad_database_url_is_named_as_the_caller_gave_it(
    run_cli, credentials, tmp_path, url, error, detail
):
    # Regression: the Python API's message said "--db ...", a flag its caller never gave.
    archive = tmp_path / "runs.jsonl"
    archive.write_text('{"projectId": "p", "runName": "1"}\n')
    for call in (
        lambda: nsml_etl.export(all_runs=True, db_url=url),
        lambda: nsml_etl.load(archive, db_url=url),
    ):
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value).startswith(f"db_url={detail}")
        assert "--db" not in str(caught.value) and "pw-s3cret" not in str(caught.value)
    for args in (["export", "--all"], ["load", str(archive)]):
        result = run_cli(*args, "--db", url)
        assert result.exit_code == error.exit_code, result.output
        assert result.stderr.startswith(f"Error: --db {detail}")
        assert "db_url=" not in result.stderr and "pw-s3cret" not in result.output
