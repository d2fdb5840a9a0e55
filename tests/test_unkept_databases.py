"""Databases that cannot keep what they are given (issue 20, section 4): a SQLite URL with no
file or an in-memory one, a database that refuses writes, a table name a database keeps for
its catalog, and database errors that must keep the database's own words. Each is found
before the first request, through the real CLI and the Python API, on every database it
concerns."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import _server_database, drop_views, fetch_rows, table_names, write_pairs

import nsml_etl

# -- a URL that keeps nothing -----------------------------------------------------------------

UNKEPT_URLS = [
    "sqlite:///:memory:",
    "sqlite://",
    "sqlite:///",  # what sqlite:///$UNSET_VAR becomes
    "sqlite:///file::memory:?uri=true",
    "sqlite:///file:runs.db?mode=memory&uri=true",
    "sqlite:///file:?uri=true",
]


def _usage_error(result, option: str) -> None:
    assert result.exit_code == 2, result.output
    assert option in result.stderr and "keeps nothing" in result.stderr, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("url", UNKEPT_URLS)
def test_an_unkept_sqlite_url_is_refused_before_any_request(
    run_cli, credentials, simulator, tmp_path, url, monkeypatch
):
    # Regression: a traceback, then "exported 24", exit 0, and nothing kept anywhere.
    monkeypatch.chdir(tmp_path)
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    base = ("--base-url", simulator.base_url)
    for args in (
        ("export", *base, "--pairs", str(pairs)),
        ("export", *base, "--all"),
        ("export", *base, "--pairs", str(pairs), "--dry-run"),
        ("check", *base),
        ("report",),
        ("views",),
        ("gpu-servers", "list"),
    ):
        _usage_error(run_cli(*args, "--db", url), "--db")
    monkeypatch.setenv("NSML_ETL_DB_URL", url)
    _usage_error(run_cli("export", *base, "--all"), "NSML_ETL_DB_URL")
    assert simulator.stats.requests == 0
    assert list(tmp_path.iterdir()) == [pairs]  # no file named after the URL either


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///"])
def test_the_python_api_refuses_an_unkept_url(credentials, simulator, tmp_path, url):
    with pytest.raises(nsml_etl.InputError, match="^db_url: .*keeps nothing"):
        nsml_etl.export(simulator.pairs(), db_url=url, base_url=simulator.base_url)
    archive = tmp_path / "runs.jsonl"
    archive.write_text('{"projectId": "p", "runName": "1"}\n')
    with pytest.raises(nsml_etl.InputError, match="^db_url: .*keeps nothing"):
        nsml_etl.load(archive, db_url=url)
    assert simulator.stats.requests == 0


# -- a table name the database keeps for its catalog -------------------------------------------


@pytest.mark.parametrize("table", ["pg_class", "pg_runs", "sqlite_master", "sqlite_runs"])
def test_a_catalog_table_name_is_a_usage_error(run_cli, credentials, simulator, db_url, table):
    # Regression: on PostgreSQL every run was fetched, then exit 4 "schema change on table
    # pg_class failed: pg_class"; on SQLite, sqlite_* could not be created either.
    result = run_cli(
        "export", "--base-url", simulator.base_url, "--db", db_url, "--all", "--table", table
    )
    assert result.exit_code == 2, result.output
    assert "--table" in result.stderr and "catalog" in result.stderr
    assert simulator.stats.requests == 0
    with pytest.raises(nsml_etl.InputError, match="^table: .*catalog"):
        nsml_etl.export(all_runs=True, db_url=db_url, table=table, base_url=simulator.base_url)
    assert simulator.stats.requests == 0
    if not db_url.startswith("sqlite"):
        assert table_names(db_url) == set()


# -- a database that refuses writes -----------------------------------------------------------


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """Make ``path`` immutable (chattr +i), which root cannot write past, as it can past
    permission bits; undone afterwards so the test's folder can be removed."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed (the mode=ro case still runs)")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture(params=["file", "folder", "mode=ro"])
def read_only_sqlite(
    request, run_cli, credentials, simulator, tmp_path
) -> Iterator[tuple[str, Path]]:
    """(URL, file) of a SQLite database with runs and views that refuses every write: the
    file immutable, its folder immutable (SQLite cannot create its journal), or opened with
    ``mode=ro``."""
    folder = tmp_path / "ro"
    folder.mkdir()
    database = folder / "runs.db"
    url = f"sqlite:///{database}"
    nsml_etl.export(simulator.pairs()[:3], db_url=url, base_url=simulator.base_url)
    assert run_cli("views", "--db", url).exit_code == 0
    simulator.stats.requests = 0
    if request.param == "mode=ro":
        yield f"sqlite:///file:{database}?mode=ro&uri=true", database
        return
    with _immutable(database if request.param == "file" else folder):
        yield url, database


def test_a_read_only_sqlite_database_fails_check_and_export_before_any_request(
    run_cli, simulator, read_only_sqlite, tmp_path
):
    # Regression: check said OK and --dry-run passed; export then sent every request and
    # exited 4 with "recording the batch failed: OperationalError", keeping nothing.
    url, database = read_only_sqlite
    base = ("--base-url", simulator.base_url, "--db", url)
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    check = run_cli("check", *base)
    assert check.exit_code == 4, check.output
    line = check.stdout.splitlines()[0]
    assert line.startswith("FAIL: database: ") and "read-only" in line and " — " in line
    requests_of_check = simulator.stats.requests  # check's own probe of the API
    for args in (("--pairs", str(pairs)), ("--all",), ("--pairs", str(pairs), "--dry-run")):
        result = run_cli("export", *base, *args)
        assert result.exit_code == 4, result.output
        assert f"{database.name} is read-only" in result.stderr, result.stderr
        assert "Traceback" not in result.output
    assert simulator.stats.requests == requests_of_check
    archive = tmp_path / "runs.jsonl"
    archive.write_text(json.dumps({"projectId": "p", "runName": "new"}) + "\n")
    loaded = run_cli("load", str(archive), "--db", url)
    assert loaded.exit_code == 4 and "read-only" in loaded.stderr, loaded.output
    with pytest.raises(nsml_etl.DatabaseError, match="is read-only"):
        nsml_etl.export(simulator.pairs(), db_url=url, base_url=simulator.base_url)
    with pytest.raises(nsml_etl.DatabaseError, match="is read-only"):
        nsml_etl.load(archive, db_url=url)
    assert simulator.stats.requests == requests_of_check
    assert len(fetch_rows(f"sqlite:///{database}", "SELECT * FROM nsml_runs")) == 3


def test_report_reads_the_views_of_a_read_only_sqlite_database(run_cli, read_only_sqlite):
    # Regression: report replaced the views first, and failed: "creating view ... failed".
    url, _ = read_only_sqlite
    result = run_cli("report", "--db", url, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["headline"]["rows"][0]["runs"] == 3


def test_commands_that_write_say_read_only_and_those_that_read_work(run_cli, read_only_sqlite):
    # Regression: views said "creating view ... failed: attempt to write a readonly database".
    url, database = read_only_sqlite
    for args in (("views",), ("gpu-servers", "set", "7", "2"), ("gpu-servers", "unset", "7")):
        result = run_cli(*args, "--db", url)
        assert result.exit_code == 4, result.output
        assert f"{database.name} is read-only" in result.stderr, result.stderr
    listed = run_cli("gpu-servers", "list", "--db", url)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("gpu_svr_code\tgpus\tlabel\n")


def test_report_on_a_read_only_database_without_views_says_so(
    run_cli, credentials, simulator, tmp_path
):
    database = tmp_path / "runs.db"
    nsml_etl.export(
        simulator.pairs()[:3], db_url=f"sqlite:///{database}", base_url=simulator.base_url
    )
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:  # the export made them: a database from before it did
        drop_views(conn)
    engine.dispose()
    result = run_cli("report", "--db", f"sqlite:///file:{database}?mode=ro&uri=true")
    assert result.exit_code == 4, result.output
    assert "is read-only" in result.stderr and "run nsml-etl views" in result.stderr


@pytest.fixture
def read_only_postgres(run_cli, credentials, simulator) -> Iterator[str]:
    """A PostgreSQL database with runs and views whose sessions are read-only."""
    for url in _server_database("postgresql"):
        nsml_etl.export(simulator.pairs()[:3], db_url=url, base_url=simulator.base_url)
        assert run_cli("views", "--db", url).exit_code == 0
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        name = sa.make_url(url).database
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        engine.dispose()
        simulator.stats.requests = 0
        yield url


def test_a_read_only_postgres_database_is_found_before_any_request(
    run_cli, simulator, read_only_postgres
):
    url = read_only_postgres
    check = run_cli("check", "--base-url", simulator.base_url, "--db", url)
    assert check.exit_code == 4, check.output
    assert check.stdout.startswith("FAIL: database: ") and "read-only" in check.stdout
    before = simulator.stats.requests
    result = run_cli("export", "--base-url", simulator.base_url, "--db", url, "--all")
    assert result.exit_code == 4, result.output
    assert "is read-only" in result.stderr and "Traceback" not in result.output
    assert simulator.stats.requests == before
    report = run_cli("report", "--db", url, "--format", "json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["headline"]["rows"][0]["runs"] == 3


# -- database errors keep their words ---------------------------------------------------------

FROZEN = "batches are frozen for the audit"
# A trigger that refuses new batch rows with the database's own error, on each database.
REFUSE_BATCHES = {
    "sqlite": [
        "CREATE TRIGGER frozen BEFORE INSERT ON nsml_export_batches "
        f"BEGIN SELECT RAISE(ABORT, '{FROZEN}'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{FROZEN}'; END $$",
        "CREATE TRIGGER frozen BEFORE INSERT ON nsml_export_batches "
        "FOR EACH ROW EXECUTE FUNCTION frozen()",
    ],
    "mysql": [
        "CREATE TRIGGER frozen BEFORE INSERT ON nsml_export_batches FOR EACH ROW "
        f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{FROZEN}'"
    ],
}


def test_a_refused_batch_row_says_what_the_database_said(run_cli, credentials, simulator, db_url):
    # Regression: "recording the batch failed: IntegrityError" (or InternalError), the
    # database's reason dropped.
    if db_url.startswith("duckdb"):
        pytest.skip("DuckDB has no triggers to refuse a row with words of its own")
    nsml_etl.export(simulator.pairs()[:1], db_url=db_url, base_url=simulator.base_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        for statement in REFUSE_BATCHES[engine.dialect.name.replace("mariadb", "mysql")]:
            conn.exec_driver_sql(statement)
    engine.dispose()
    result = run_cli("export", "--base-url", simulator.base_url, "--db", db_url, "--all")
    assert result.exit_code == 4, result.output
    assert f"recording the batch failed: {FROZEN}" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(nsml_etl.DatabaseError, match=f"recording the batch failed: {FROZEN}"):
        nsml_etl.export(all_runs=True, db_url=db_url, base_url=simulator.base_url)
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_export_batches") == [{"n": 1}]


def test_first_line_is_the_database_reason_in_one_short_line():
    import psycopg
    import pymysql

    from nsml_etl.warehouse.failures import MAX_REASON_CHARS, first_line

    def wrapped(orig: Exception) -> sa.exc.DBAPIError:
        return sa.exc.DBAPIError.instance("INSERT ...", {"v": "secret"}, orig, Exception)

    # Regression: "schema change on table pg_class failed: pg_class".
    assert first_line(sa.exc.NoSuchTableError("pg_class")) == "NoSuchTableError: pg_class"
    # Regression: PyMySQL's (code, message) pair was shown as a tuple.
    assert first_line(wrapped(pymysql.err.DataError(1406, "Data too long"))) == "Data too long"
    # PostgreSQL's DETAIL line names the values of a key: dropped.
    detail = psycopg.errors.UniqueViolation("duplicate key\nDETAIL:  Key (v)=(secret) exists")
    assert first_line(wrapped(detail)) == "duplicate key"
    long = first_line(wrapped(pymysql.err.DataError(1366, "Incorrect value: '" + "x" * 5000)))
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")


def test_a_new_sqlite_file_in_a_folder_root_cannot_write_fails_before_any_request(
    run_cli, credentials, simulator, tmp_path
):
    # Regression: the folder was judged by os.access, which says yes to root even for an
    # immutable folder: check said OK, and export sent every request, then failed creating the
    # file with exit 4.
    folder = tmp_path / "sealed"
    folder.mkdir()
    url = f"sqlite:///{folder / 'runs.db'}"
    base = ("--base-url", simulator.base_url, "--db", url)
    with _immutable(folder):
        check = run_cli("check", *base)
        assert check.exit_code == 4, check.output
        assert check.stdout.startswith("FAIL: database: ") and "not writable" in check.stdout
        requests_of_check = simulator.stats.requests
        for args in (("--all",), ("--all", "--dry-run")):
            result = run_cli("export", *base, *args)
            assert result.exit_code == 4, result.output
            assert f"directory {folder} is not writable (Operation not permitted)" in (
                result.stderr
            )
        with pytest.raises(nsml_etl.DatabaseError, match="is not writable"):
            nsml_etl.export(all_runs=True, db_url=url, base_url=simulator.base_url)
        assert simulator.stats.requests == requests_of_check
        assert list(folder.iterdir()) == []  # nothing made, the probe file neither
