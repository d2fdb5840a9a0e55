"""Signals, hung servers and held locks: every run fetched before is committed, nothing hangs.

Signals go to a real `python -m nsml_etl.cli` process, in its own session as under cron, the way
coreutils `timeout` sends them: to the process and to its process group, back to back.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import sqlalchemy as sa
from conftest import (
    CliProcess,
    drop_views,
    fetch_rows,
    table_names,
    wait_for,
    write_pairs,
)

from nsml_etl.warehouse import schema

# (database, signal, exit code): both signals on SQLite, each server database once.
SIGNAL_CASES = [
    ("sqlite", signal.SIGTERM, 143),
    ("sqlite", signal.SIGINT, 130),
    ("postgresql", signal.SIGTERM, 143),
    ("mysql", signal.SIGINT, 130),
]


def _signal_twice(proc: CliProcess, signum: int) -> None:
    """As coreutils `timeout` does: the process, then its whole group, at once."""
    os.kill(proc.pid, signum)
    os.killpg(proc.pid, signum)


def _exported(out: str) -> int:
    return int(out.split("Summary: exported ")[1].split(",")[0])


def _stored_pairs(db_url: str) -> set[tuple[str, str]]:
    return {
        (r["project_id"], r["run_name"])
        for r in fetch_rows(db_url, "SELECT project_id, run_name FROM nsml_runs")
    }


@pytest.mark.parametrize(("db_url", "signum", "code"), SIGNAL_CASES, indirect=["db_url"])
def test_two_signals_at_once_still_commit_every_fetched_run(
    make_simulator, db_url, tmp_path, signum, code
):
    sim = make_simulator(projects=1, runs_per_project=400, latency=0.05, slow_seconds=120)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    raw = tmp_path / "raw.jsonl"
    proc = CliProcess(
        tmp_path,
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "4",
        "--chunk-size",
        "5",
        "--save-raw",
        str(raw),
    )
    wait_for(lambda: sim.stats.requests >= 30)
    # From now on requests hang, so the export is still running (its requests in their grace
    # period) when the signal is repeated below.
    sim.set_faults(1.0, ("slow",))
    _signal_twice(proc, signum)
    # The kernel may merge two signals sent at once: repeat it once the first was handled,
    # as a person pressing Ctrl-C twice does. The repeat cuts the hung requests at once.
    wait_for(lambda: "stopping; committing the runs in hand" in proc.stderr())
    os.kill(proc.pid, signum)
    out, err = proc.finish(code)
    assert "again: cancelling the requests in flight" in err
    # Every response received (the raw archive holds each one) is in the table; requests cut
    # by the repeated signal are in neither.
    fetched = {
        (r["projectId"], r["runName"]) for r in map(json.loads, raw.read_text().splitlines())
    }
    assert _stored_pairs(db_url) == fetched
    assert 30 - 4 <= _exported(out) == len(fetched) < 400
    (batch,) = fetch_rows(db_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": len(fetched)}


@pytest.mark.parametrize(("db_url", "signum", "code"), SIGNAL_CASES, indirect=["db_url"])
def test_two_signals_at_once_stop_a_load_and_commit_what_was_read(db_url, tmp_path, signum, code):
    total = 40_000
    path = tmp_path / "runs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(total):
            handle.write(json.dumps({"projectId": "p", "runName": str(i)}) + "\n")
    proc = CliProcess(tmp_path, "load", str(path), "--db", db_url, "--chunk-size", "100")

    def some_committed() -> bool:
        if "nsml_export_batches" not in table_names(db_url):
            return False
        return bool(fetch_rows(db_url, "SELECT id FROM nsml_export_batches"))

    wait_for(some_committed)
    _signal_twice(proc, signum)
    out, _ = proc.finish(code)
    exported = _exported(out)
    assert 0 < exported < total
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == exported
    (batch,) = fetch_rows(db_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": exported}


def test_sigterm_ends_an_export_within_seconds_while_every_request_hangs(
    make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(
        projects=1, runs_per_project=200, latency=0.02, slow_seconds=120, retry_after=60
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    proc = CliProcess(
        tmp_path,
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "4",
        "--chunk-size",
        "5",
        "--timeout",
        "30",
    )
    wait_for(lambda: sim.stats.requests >= 20)
    # From now on every request hangs for two minutes, or is throttled with Retry-After: 60.
    sim.set_faults(1.0, ("slow", "429"))
    wait_for(lambda: sim.stats.faults.total() >= 4)  # every worker is stuck in one or the other
    signalled = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.finish(143)
    assert time.monotonic() - signalled < 15  # not 30 s per attempt (117 s before), nor 60 s
    answered = sim.stats.by_status[200]  # the hung requests were never answered
    assert _exported(out) == answered == len(_stored_pairs(sqlite_url)) >= 10
    (batch,) = fetch_rows(sqlite_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": answered}


def test_timeout_bounds_a_whole_trickling_response(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    # Headers at once, then a byte a second: each read is quick, the response takes minutes.
    def export(fault_streak):
        sim = make_simulator(
            projects=1,
            runs_per_project=3,
            fault_rate=1.0,
            fault_kinds=("trickle",),
            trickle_seconds=1.0,
            fault_streak=fault_streak,
        )
        pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
        started = time.monotonic()
        result = run_cli(
            "export",
            "--pairs",
            str(pairs_file),
            "--db",
            sqlite_url,
            "--base-url",
            sim.base_url,
            "--timeout",
            "2",
            "--max-attempts",
            str(attempts),
            "--backoff-initial",
            "0.01",
        )
        assert time.monotonic() - started < 20  # attempts of 2 s, not 600 s
        return sim, result

    attempts = 1
    sim, result = export(fault_streak=None)
    assert result.exit_code == 1, result.output
    # The reason, which names the API's host and port, is said once over the three pairs.
    host_port = sim.base_url.split("//")[1].split("/")[0]
    assert f"  3 pairs: transport error: read timed out ({host_port})\n" in result.stdout
    for project_id, run_name in sim.pairs():
        assert f"    {project_id}\t{run_name}\t[1 attempt]\n" in result.stdout
    assert _stored_pairs(sqlite_url) == set()

    attempts = 2
    sim, result = export(fault_streak=1)  # one trickle per run, then a prompt answer
    assert result.exit_code == 0, result.output
    assert "Summary: exported 3, failed 0, retried 3," in result.stdout
    assert _stored_pairs(sqlite_url) == set(sim.pairs())


def test_a_database_error_marks_the_batch_failed_with_its_reason(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=2, runs_per_project=3)
    first_pairs, second_pairs = (
        [(project, run) for run in body["runs"]] for project, body in sim.data.items()
    )

    def export(pairs):
        return run_cli(
            "export",
            "--pairs",
            str(write_pairs(tmp_path / "pairs.csv", pairs)),
            "--db",
            db_url,
            "--base-url",
            sim.base_url,
        )

    assert export(first_pairs).exit_code == 0
    # The batches table as nsml-etl made it before it had an error column; and a history table
    # a DBA broke (a renamed column): a problem of the database, not of any run's data, so the
    # export stops with exit 4 rather than failing each run alone.
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        drop_views(conn)  # the first export made them; SQLite would refuse to change the tables
        if conn.dialect.name == "duckdb":  # DuckDB alters no table that depends on another
            conn.exec_driver_sql("DROP INDEX ix_nsml_run_history_run")
        else:
            conn.exec_driver_sql("ALTER TABLE nsml_export_batches DROP COLUMN error")
        conn.exec_driver_sql("ALTER TABLE nsml_run_history RENAME COLUMN status TO scratch_s")
    engine.dispose()

    result = export(second_pairs)
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("Error: writing 3 runs to table nsml_runs failed:")
    assert "Traceback" not in result.output
    batches = fetch_rows(
        db_url, "SELECT status, exported, finished_at, error FROM nsml_export_batches ORDER BY id"
    )
    assert [(b["status"], b["exported"]) for b in batches] == [("succeeded", 3), ("failed", 0)]
    assert batches[1]["finished_at"] is not None and batches[1]["error"] is not None
    assert batches[1]["error"] == result.stderr.removeprefix("Error: ").strip()
    assert _stored_pairs(db_url) == set(first_pairs)

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # mended: the views read that column
        conn.exec_driver_sql("ALTER TABLE nsml_run_history RENAME COLUMN scratch_s TO status")
    engine.dispose()
    assert run_cli("views", "--db", db_url).exit_code == 0
    (fresh,) = fetch_rows(db_url, "SELECT * FROM nsml_export_freshness")
    assert fresh["unsuccessful_exports"] == 1
    assert fresh["last_successful_export"] == batches[0]["finished_at"]


@pytest.mark.parametrize("db_url", ["postgresql", "mysql"], indirect=True)
def test_a_schema_change_waits_a_bounded_time_behind_an_open_dashboard_transaction(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(schema, "SCHEMA_LOCK_TIMEOUT_S", 1.0)  # MySQL's smallest wait
    monkeypatch.setattr(schema, "SCHEMA_LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(schema, "SCHEMA_LOCK_RETRY_WAIT_S", 0.1)
    sim = make_simulator(projects=1, runs_per_project=3)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())

    def export():
        return run_cli(
            "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
        )

    assert export().exit_code == 0
    project = next(iter(sim.data))
    sim.put_run(project, "1", {**sim.run(project, "1"), "envs": {"BRAND_NEW_KEY": "42"}})
    engine = sa.create_engine(db_url)
    dashboard = engine.connect()
    dashboard.execute(sa.text("SELECT * FROM nsml_runs")).all()  # its transaction stays open
    try:
        started = time.monotonic()
        result = export()  # a new env key: ALTER TABLE nsml_runs ADD COLUMN
        assert time.monotonic() - started < 30  # not until the dashboard commits
        assert result.exit_code == 4, result.output
        warning, error = result.stderr.splitlines()
        assert "table nsml_runs is locked by another session; adding columns again" in warning
        assert error.startswith("Error: table nsml_runs is locked by another session")
        # Nothing wedged: a new dashboard query is not queued behind a waiting ALTER.
        assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs") == [{"n": 3}]
        batches = fetch_rows(db_url, "SELECT status, error FROM nsml_export_batches ORDER BY id")
        assert [b["status"] for b in batches] == ["succeeded", "failed"]
        assert batches[1]["error"].startswith("table nsml_runs is locked by another session")
    finally:
        dashboard.rollback()
        dashboard.close()
        engine.dispose()

    assert export().exit_code == 0  # once the dashboard let go
    (column,) = fetch_rows(
        db_url, "SELECT column_name FROM nsml_env_columns WHERE env_key = 'BRAND_NEW_KEY'"
    )
    rows = fetch_rows(
        db_url,
        f"SELECT {column['column_name']} AS v FROM nsml_runs "  # noqa: S608
        "WHERE run_name = '1'",
    )
    assert rows == [{"v": "42"}]
