"""nsml_export_batches / nsml_export_failures, and chunk retries when the database drops."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy as sa
from conftest import _server_database, fetch_rows, write_pairs

from nsml_etl.chunks import DB_WRITE_ATTEMPTS, ChunkWriter, is_transient_db_error
from nsml_etl.errors import DatabaseError
from nsml_etl.outcome import ExportReport
from nsml_etl.pairs import Pair
from nsml_etl.transform import TERMINAL_STATUSES, flatten_run
from nsml_etl.warehouse import WRITE, Warehouse
from nsml_etl.warehouse.store import RunStore


def test_batches_and_failures_are_recorded(run_cli, credentials, simulator, db_url, tmp_path):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs + [("gone", "7")])
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", simulator.base_url
    )
    assert result.exit_code == 1
    retry = write_pairs(tmp_path / "again.csv", pairs[:2])
    assert (
        run_cli(
            "export", "--pairs", str(retry), "--db", db_url, "--base-url", simulator.base_url
        ).exit_code
        == 0
    )

    batches = fetch_rows(db_url, "SELECT * FROM nsml_export_batches ORDER BY id")
    assert [
        (b["command"], b["status"], b["requested"], b["exported"], b["failed"]) for b in batches
    ] == [("export", "partial", len(pairs) + 1, len(pairs), 1), ("export", "succeeded", 2, 2, 0)]
    first = batches[0]
    assert first["table_name"] == "nsml_runs" and first["finished_at"] >= first["started_at"]
    options = json.loads(first["options"])
    assert options["base_url"] == simulator.base_url and options["concurrency"] == 8
    (failure,) = fetch_rows(db_url, "SELECT * FROM nsml_export_failures")
    assert failure["batch_id"] == first["id"]
    assert (
        failure["project_id"],
        failure["run_name"],
        failure["http_status"],
        failure["error_code"],
        failure["attempts"],
    ) == ("gone", "7", 404, "300", 1)
    assert "Not Found" in failure["message"]


def test_batch_options_never_hold_the_database_password(
    run_cli, credentials, simulator, tmp_path, monkeypatch
):
    # PostgreSQL here trusts local connections, so any password gets in: a real URL carrying
    # a recognizable password.
    database = _server_database("postgresql")
    url = sa.make_url(next(database)).set(password="pgSECRETpw-1")
    url_text = url.render_as_string(hide_password=False)
    try:
        _export_and_scan(run_cli, simulator, tmp_path, monkeypatch, url_text)
    finally:
        database.close()  # drops the database


def _export_and_scan(run_cli, simulator, tmp_path, monkeypatch, url_text):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs() + [("gone", "1")])
    monkeypatch.setenv("NSML_ETL_DB_URL", url_text)
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--base-url",
        simulator.base_url,
        "--log-format",
        "json",
        "--verbose",
    )
    assert result.exit_code == 1
    assert "pgSECRETpw-1" not in result.output
    dump = str(fetch_rows(url_text, "SELECT * FROM nsml_export_batches"))
    dump += str(fetch_rows(url_text, "SELECT * FROM nsml_export_failures"))
    assert "pgSECRETpw-1" not in dump and "***" in dump


def test_load_records_a_batch(run_cli, sqlite_url, tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"projectId": "p", "runName": "1"}) + "\n")
    assert run_cli("load", str(path), "--db", sqlite_url).exit_code == 0
    (batch,) = fetch_rows(sqlite_url, "SELECT command, status, exported FROM nsml_export_batches")
    assert batch == {"command": "load", "status": "succeeded", "exported": 1}


def _operational(invalidated: bool) -> DatabaseError:
    orig = sa.exc.OperationalError(
        "INSERT", {}, Exception("server closed the connection"), connection_invalidated=invalidated
    )
    error = DatabaseError("writing 1 runs failed")
    error.__cause__ = orig
    return error


def test_transient_database_errors_are_recognized():
    assert is_transient_db_error(_operational(True))
    assert is_transient_db_error(_operational(False))
    integrity = DatabaseError("dup")
    integrity.__cause__ = sa.exc.IntegrityError("INSERT", {}, Exception("duplicate"))
    assert not is_transient_db_error(integrity)
    assert not is_transient_db_error(DatabaseError("no cause"))


class FlakyStore(RunStore):
    """A real SQLite store whose first ``failures`` upserts lose their connection."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(Warehouse.open(url, WRITE, table="nsml_runs").schema)
        self.failures = failures
        self.calls = 0

    def upsert(self, frame, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise _operational(True)
        return super().upsert(frame, **kwargs)


def _runs(n: int):
    now = datetime(2026, 11, 27)
    return [flatten_run({"envs": {"A": str(i)}}, Pair("p", str(i)), now) for i in range(n)]


def test_a_dropped_connection_is_retried_and_the_chunk_lands_once(sqlite_url):
    store, sleeps = FlakyStore(sqlite_url, failures=DB_WRITE_ATTEMPTS - 1), []
    writer = ChunkWriter(store, 10, ExportReport(), sleep=sleeps.append)
    for run in _runs(4):
        writer.add(run)
    writer.flush()
    assert writer.report.exported == 4 and len(sleeps) == DB_WRITE_ATTEMPTS - 1
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs") == [{"n": 4}]


def test_a_database_that_stays_away_stops_with_a_clear_error(sqlite_url):
    store = FlakyStore(sqlite_url, failures=99)
    writer = ChunkWriter(store, 10, ExportReport(), sleep=lambda s: None)
    writer.add(_runs(1)[0])
    with pytest.raises(DatabaseError, match=f"gave up after {DB_WRITE_ATTEMPTS} attempts"):
        writer.flush()
    assert store.calls == DB_WRITE_ATTEMPTS


def test_connections_killed_between_chunks_reconnect(tmp_path):
    """A real server dropping every connection (a restart, a failover) mid-export."""
    database = _server_database("postgresql")
    url = next(database)
    try:
        store = Warehouse.open(url, WRITE, table="nsml_runs").store
        writer = ChunkWriter(store, 3, ExportReport(), sleep=lambda s: None)
        runs = _runs(9)
        for run in runs[:3]:
            writer.add(run)
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()
        for run in runs[3:]:
            writer.add(run)
        assert writer.report.exported == 9
        assert fetch_rows(url, "SELECT COUNT(*) AS n FROM nsml_runs") == [{"n": 9}]
        store.engine.dispose()
    finally:
        database.close()


def test_discovery_batches_record_what_was_found_and_how(
    run_cli, credentials, make_simulator, sqlite_url
):
    # Regression: --all recorded requested 0 and options "pairs": null, and nothing of --all,
    # --project or --skip-finished.
    sim = make_simulator(projects=3, runs_per_project=5)
    first, third = list(sim.data)[:3:2]
    for args in (["--all"], ["--all", "--skip-finished"], ["--project", first, "--project", third]):
        result = run_cli("export", *args, "--db", sqlite_url, "--base-url", sim.base_url)
        assert result.exit_code == 0, result.output
    finished = sum(sim.run(*p)["status"] in TERMINAL_STATUSES for p in sim.pairs())
    batches = fetch_rows(
        sqlite_url, "SELECT requested, exported, options FROM nsml_export_batches ORDER BY id"
    )
    assert [(b["requested"], b["exported"]) for b in batches] == [
        (15, 15),
        (15, 15 - finished),
        (10, 10),
    ]
    assert 0 < finished < 15
    options = [json.loads(b["options"]) for b in batches]
    assert [(o["mode"], o["projects"], o["skip_finished"], o["pairs"]) for o in options] == [
        ("all", None, False, None),
        ("all", None, True, None),
        ("projects", [first, third], False, None),
    ]


def test_freshness_counts_partial_exports_apart_from_successful_ones(
    run_cli, credentials, simulator, db_url, tmp_path
):
    def export(pairs) -> int:
        pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
        return run_cli(
            "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", simulator.base_url
        ).exit_code

    def freshness() -> dict:
        assert run_cli("views", "--db", db_url).exit_code == 0
        (fresh,) = fetch_rows(
            db_url,
            "SELECT last_successful_export, partial_exports, "
            "unsuccessful_exports FROM nsml_export_freshness",
        )
        return fresh

    assert export([*simulator.pairs()[:2], ("gone", "1")]) == 1
    assert freshness() == {
        "last_successful_export": None,
        "partial_exports": 1,
        "unsuccessful_exports": 0,
    }
    assert export(simulator.pairs()[:2]) == 0
    (succeeded,) = fetch_rows(
        db_url, "SELECT finished_at FROM nsml_export_batches WHERE status = 'succeeded'"
    )
    assert freshness() == {
        "last_successful_export": succeeded["finished_at"],
        "partial_exports": 1,
        "unsuccessful_exports": 0,
    }
