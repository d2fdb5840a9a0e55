"""--metrics-file and report.metrics: the Prometheus text file every export and load rewrites at
its end, whatever the outcome, read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ACCESS_KEY, SECRET_KEY, drop_views, export_args, fetch_rows, write_pairs
from prometheus_client.parser import text_string_to_metric_families

import nsml_etl

# A server database for the cases that need no second one (SQLite runs each case too).
SQLITE_AND_ONE_SERVER = ["sqlite", "postgresql"]


def read_metrics(path: Path) -> dict:
    """{metric name without nsml_etl_: value, or {label value: value} for runs and requests},
    checking that every sample carries the same table and database labels."""
    metrics: dict = {"requests": {}}  # a run that sent no request has no requests sample
    labels = set()
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge"
        for sample in family.samples:
            name = sample.name.removeprefix("nsml_etl_")
            fixed = {k: v for k, v in sample.labels.items() if k in ("table", "database")}
            labels.add(tuple(sorted(fixed.items())))
            if name == "runs":
                metrics.setdefault(name, {})[sample.labels["outcome"]] = sample.value
            elif name == "requests":
                metrics.setdefault(name, {})[sample.labels["status"]] = sample.value
            else:
                metrics[name] = sample.value
    (metrics["labels"],) = [dict(item) for item in labels]
    return metrics


def export(run_cli, sim, db_url: str, pairs_file: Path, metrics_file: Path, *more: str):
    metrics = ("--metrics-file", str(metrics_file))
    return run_cli(*export_args(sim, pairs_file, db_url, *metrics, *more))


def finished_at(db_url: str, status: str) -> float:
    (row,) = fetch_rows(
        db_url, "SELECT finished_at FROM nsml_export_batches WHERE status = :s", {"s": status}
    )
    value = row["finished_at"]  # SQLite hands back the stored text
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC).timestamp()


def test_success_then_partial_failure_keeps_the_last_success(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=2, runs_per_project=4)
    metrics_file = tmp_path / "nsml_etl.prom"
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = export(run_cli, sim, db_url, pairs, metrics_file)
    assert result.exit_code == 0, result.output
    first = read_metrics(metrics_file)
    assert first["exit_code"] == 0
    assert first["runs"] == {
        "requested": 8,
        "exported": 8,
        "failed": 0,
        "skipped": 0,
        "not_attempted": 0,
    }
    assert first["requests"] == {"200": 8} and first["retries"] == 0
    assert first["last_success_timestamp_seconds"] == first["last_run_timestamp_seconds"]
    assert first["last_run_timestamp_seconds"] == pytest.approx(
        finished_at(db_url, "succeeded"), abs=1
    )
    assert first["duration_seconds"] > 0
    assert first["labels"]["table"] == "nsml_runs"
    assert first["labels"]["database"] == sa.make_url(db_url).render_as_string(hide_password=True)

    partial = write_pairs(tmp_path / "partial.csv", [*sim.pairs()[:2], ("gone", "7")])
    result = export(run_cli, sim, db_url, partial, metrics_file)
    assert result.exit_code == 1, result.output
    second = read_metrics(metrics_file)
    assert second["exit_code"] == 1
    assert second["runs"] == {
        "requested": 3,
        "exported": 2,
        "failed": 1,
        "skipped": 0,
        "not_attempted": 0,
    }
    assert second["requests"] == {"200": 2, "404": 1}
    # Kept from the previous file, not moved to this run.
    assert second["last_success_timestamp_seconds"] == first["last_success_timestamp_seconds"]
    assert second["last_run_timestamp_seconds"] >= first["last_run_timestamp_seconds"]


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
def test_without_a_previous_file_the_last_success_comes_from_the_batch_table(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli("export", "--pairs", str(pairs), "--db", db_url, "--base-url", sim.base_url)
    assert result.exit_code == 0, result.output
    metrics_file = tmp_path / "m.prom"
    bad = write_pairs(tmp_path / "bad.csv", [("gone", "1")])
    assert export(run_cli, sim, db_url, bad, metrics_file).exit_code == 1
    metrics = read_metrics(metrics_file)
    assert metrics["last_success_timestamp_seconds"] == pytest.approx(
        finished_at(db_url, "succeeded"), abs=1e-3
    )


def test_no_success_known_is_zero(run_cli, credentials, make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=1)
    metrics_file = tmp_path / "m.prom"
    bad = write_pairs(tmp_path / "bad.csv", [("gone", "1")])
    assert export(run_cli, sim, sqlite_url, bad, metrics_file).exit_code == 1
    assert read_metrics(metrics_file)["last_success_timestamp_seconds"] == 0


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
def test_an_authentication_failure_is_written(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    sim = make_simulator(projects=1, runs_per_project=3)
    monkeypatch.setenv("NCP_SECRET_KEY", "wrong")
    metrics_file = tmp_path / "m.prom"
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = export(run_cli, sim, db_url, pairs, metrics_file, "--concurrency", "1")
    assert result.exit_code == 3, result.output
    metrics = read_metrics(metrics_file)
    assert metrics["exit_code"] == 3
    assert metrics["requests"] == {"401": 1}
    assert metrics["runs"]["exported"] == 0 and metrics["runs"]["not_attempted"] == 3
    assert metrics["last_success_timestamp_seconds"] == 0


def test_an_unreachable_database_is_written_without_its_password(
    run_cli, credentials, make_simulator, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=1)
    metrics_file = tmp_path / "m.prom"
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    db = "postgresql+psycopg://etl:s3cretPW@127.0.0.1:1/warehouse"
    result = export(run_cli, sim, db, pairs, metrics_file)
    assert result.exit_code == 4, result.output
    text = metrics_file.read_text()
    assert "s3cretPW" not in text
    metrics = read_metrics(metrics_file)
    assert metrics["exit_code"] == 4
    assert metrics["labels"]["database"] == "postgresql+psycopg://etl:***@127.0.0.1:1/warehouse"
    assert metrics["requests"] == {} and metrics["last_success_timestamp_seconds"] == 0


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
def test_a_database_failure_mid_export_is_written_with_what_came_before(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=2, runs_per_project=3)
    first, second = ([(p, r) for r in body["runs"]] for p, body in sim.data.items())
    metrics_file = tmp_path / "m.prom"
    ok = export(run_cli, sim, db_url, write_pairs(tmp_path / "1.csv", first), metrics_file)
    assert ok.exit_code == 0
    succeeded = read_metrics(metrics_file)["last_success_timestamp_seconds"]
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # a history table a DBA broke: every write fails
        drop_views(conn)  # the first export made them; SQLite would refuse the rename
        if conn.dialect.name == "duckdb":  # DuckDB alters no table an index depends on
            conn.exec_driver_sql("DROP INDEX ix_nsml_run_history_run")
        conn.exec_driver_sql("ALTER TABLE nsml_run_history RENAME COLUMN status TO scratch_s")
    engine.dispose()
    result = export(run_cli, sim, db_url, write_pairs(tmp_path / "2.csv", second), metrics_file)
    assert result.exit_code == 4, result.output
    metrics = read_metrics(metrics_file)
    assert metrics["exit_code"] == 4
    assert metrics["requests"] == {"200": 3}
    assert metrics["runs"]["requested"] == 3 and metrics["runs"]["exported"] == 0
    assert metrics["last_success_timestamp_seconds"] == succeeded


def test_an_interrupted_export_is_written_with_the_signal_exit_code(
    make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=300, latency=0.05)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    metrics_file = tmp_path / "m.prom"
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsml_etl.cli", "export", "--pairs", str(pairs), "--db"]
        + [sqlite_url, "--base-url", sim.base_url, "--concurrency", "2", "--chunk-size", "5"]
        + ["--metrics-file", str(metrics_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while sim.stats.requests < 20:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    metrics = read_metrics(metrics_file)
    assert metrics["exit_code"] == 143
    (batch,) = fetch_rows(sqlite_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch["status"] == "interrupted"
    runs = metrics["runs"]
    assert runs["requested"] == 300 and runs["exported"] == batch["exported"] > 0
    assert runs["not_attempted"] == 300 - batch["exported"] > 0
    assert metrics["last_success_timestamp_seconds"] == 0


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
@pytest.mark.parametrize("where", ["missing/dir/m.prom", "."])
def test_a_metrics_file_that_cannot_be_written_is_a_warning(
    run_cli, credentials, make_simulator, db_url, tmp_path, where
):
    sim = make_simulator(projects=1, runs_per_project=3)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = export(run_cli, sim, db_url, pairs, tmp_path / where)
    assert result.exit_code == 0, result.output
    assert "could not write the metrics file" in result.stderr
    assert "Traceback" not in result.output
    assert len(fetch_rows(db_url, "SELECT run_name FROM nsml_runs")) == 3
    (batch,) = fetch_rows(db_url, "SELECT status FROM nsml_export_batches")
    assert batch["status"] == "succeeded"
    assert [p.name for p in tmp_path.iterdir() if ".prom." in p.name] == []  # no temp file left


def test_the_warning_is_a_json_event(run_cli, credentials, make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=1)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = export(
        run_cli, sim, sqlite_url, pairs, tmp_path / "no" / "m.prom", "--log-format", "json"
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]
    (failed,) = [e for e in events if e["event"] == "metrics_file_failed"]
    assert failed["level"] == "warning" and failed["path"].endswith("m.prom")


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
def test_load_writes_its_metrics(run_cli, db_url, tmp_path, monkeypatch):
    archive = tmp_path / "runs.jsonl"
    lines = [json.dumps({"projectId": "p", "runName": str(i)}) for i in range(5)]
    archive.write_text("\n".join([*lines, "not json"]) + "\n")
    metrics_file = tmp_path / "load.prom"
    monkeypatch.setenv("NSML_ETL_METRICS_FILE", str(metrics_file))  # the env var works too
    result = run_cli("load", str(archive), "--db", db_url)
    assert result.exit_code == 1, result.output
    metrics = read_metrics(metrics_file)
    assert metrics["exit_code"] == 1
    assert metrics["runs"] == {
        "requested": 6,
        "exported": 5,
        "failed": 1,
        "skipped": 0,
        "not_attempted": 0,
    }
    assert metrics["requests"] == {} and metrics["retries"] == 0


def test_a_dry_run_writes_no_metrics(run_cli, credentials, make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=1)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    metrics_file = tmp_path / "m.prom"
    assert export(run_cli, sim, sqlite_url, pairs, metrics_file, "--dry-run").exit_code == 0
    assert not metrics_file.exists()


def test_the_config_file_key(run_cli, credentials, make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=2)
    pairs = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    metrics_file = tmp_path / "m.prom"
    config = tmp_path / "etl.toml"
    config.write_text(f"metrics_file = {json.dumps(str(metrics_file))}\n")
    result = run_cli(
        "export",
        "--pairs",
        str(pairs),
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--config",
        str(config),
    )
    assert result.exit_code == 0, result.output
    assert read_metrics(metrics_file)["runs"]["exported"] == 2


# -- the Python API -------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", SQLITE_AND_ONE_SERVER, indirect=True)
def test_the_api_returns_the_figures_it_writes(credentials, make_simulator, db_url, tmp_path):
    # Every path fails once (503), then answers.
    sim = make_simulator(projects=1, runs_per_project=4, fault_rate=1.0, fault_streak=1)
    sim.set_faults(1.0, ("503",))
    metrics_file = tmp_path / "m.prom"
    report = nsml_etl.export(
        sim.pairs(),
        db_url=db_url,
        base_url=sim.base_url,
        metrics_file=metrics_file,
        backoff_initial=0,
    )
    assert report.ok
    figures = report.metrics
    written = read_metrics(metrics_file)
    for name in ("exit_code", "last_run_timestamp_seconds", "last_success_timestamp_seconds"):
        assert figures[name] == written[name]
    assert figures["duration_seconds"] == pytest.approx(written["duration_seconds"])
    assert figures["runs"] == written["runs"] and figures["requests"] == written["requests"]
    assert figures["retries"] == written["retries"] == report.retried == 4
    assert figures["requests"] == {"200": 4, "503": 4}
    assert figures["labels"] == written["labels"]


def test_the_api_figures_without_a_file(credentials, make_simulator, sqlite_url):
    sim = make_simulator(projects=1, runs_per_project=2)
    report = nsml_etl.export(sim.pairs(), db_url=sqlite_url, base_url=sim.base_url)
    assert report.metrics["exit_code"] == 0 and report.metrics["requests"] == {"200": 2}
    assert report.metrics["runs"]["exported"] == 2


def test_the_api_records_a_stop_and_an_auth_failure(
    credentials, make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    metrics_file = tmp_path / "m.prom"
    stop = threading.Event()
    stop.set()
    report = nsml_etl.export(
        sim.pairs(), db_url=sqlite_url, base_url=sim.base_url, metrics_file=metrics_file, stop=stop
    )
    assert report.interrupted
    assert report.metrics["exit_code"] == read_metrics(metrics_file)["exit_code"] == 130
    assert report.metrics["runs"]["not_attempted"] == 3

    with pytest.raises(nsml_etl.AuthenticationError) as caught:
        nsml_etl.export(
            sim.pairs(),
            db_url=sqlite_url,
            base_url=sim.base_url,
            metrics_file=metrics_file,
            credentials=nsml_etl.Credentials(ACCESS_KEY, "wrong"),
            concurrency=1,
        )
    assert caught.value.report.metrics["exit_code"] == 3
    assert read_metrics(metrics_file)["requests"] == {"401": 1}


def test_the_api_load_figures(sqlite_url, tmp_path):
    archive = tmp_path / "runs.jsonl"
    archive.write_text(json.dumps({"projectId": "p", "runName": "1"}) + "\n")
    report = nsml_etl.load(archive, db_url=sqlite_url, metrics_file=tmp_path / "m.prom")
    assert report.metrics["runs"]["exported"] == 1
    assert read_metrics(tmp_path / "m.prom")["exit_code"] == 0


def test_the_api_database_error_carries_its_report_and_figures(
    credentials, make_simulator, db_url, tmp_path
):
    # Regression: a DatabaseError mid-export raised without its report, so an Airflow task
    # could not push the figures (the metrics file had them, the caller did not).
    sim = make_simulator(projects=2, runs_per_project=3)
    first, second = ([(p, r) for r in body["runs"]] for p, body in sim.data.items())
    assert nsml_etl.export(first, db_url=db_url, base_url=sim.base_url).ok
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # a history table a DBA broke: every write fails
        drop_views(conn)  # the first export made them; SQLite would refuse the rename
        if conn.dialect.name == "duckdb":  # DuckDB alters no table an index depends on
            conn.exec_driver_sql("DROP INDEX ix_nsml_run_history_run")
        conn.exec_driver_sql("ALTER TABLE nsml_run_history RENAME COLUMN status TO scratch_s")
    engine.dispose()
    metrics_file = tmp_path / "m.prom"
    with pytest.raises(nsml_etl.DatabaseError) as caught:
        nsml_etl.export(second, db_url=db_url, base_url=sim.base_url, metrics_file=metrics_file)
    report = caught.value.report
    assert isinstance(report, nsml_etl.ExportReport)
    assert report.requested == 3 and report.exported == 0 and report.batch_id is not None
    assert report.metrics["exit_code"] == read_metrics(metrics_file)["exit_code"] == 4
    assert report.metrics["requests"] == {"200": 3}
