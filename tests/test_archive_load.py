"""Raw archive and replay, dry runs, JSON logs and interrupts, through the real CLI."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    fetch_rows,
    run_with_terminal_stderr,
    table_names,
    write_pairs,
)

from nsml_etl.transform import TERMINAL_STATUSES


def test_save_raw_then_load_gives_the_same_tables(
    run_cli, credentials, simulator, db_url, tmp_path, sqlite_url
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    raw = tmp_path / "runs.jsonl.gz"
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        simulator.base_url,
        "--save-raw",
        str(raw),
    )
    assert result.exit_code == 0, result.output
    with gzip.open(raw, "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert len(lines) == len(simulator.pairs())
    for line in lines:  # exactly as received, plus the requested pair
        assert line["response"] == simulator.run(line["projectId"], line["runName"])

    result = run_cli("load", str(raw), "--db", db_url)
    assert result.exit_code == 0, result.output
    query = "SELECT * FROM nsml_runs ORDER BY project_id, run_name"
    exported, loaded = fetch_rows(sqlite_url, query), fetch_rows(db_url, query)
    assert [_comparable(r) for r in loaded] == [_comparable(r) for r in exported]
    mapping = "SELECT env_key, column_name FROM nsml_env_columns ORDER BY column_name"
    assert fetch_rows(db_url, mapping) == fetch_rows(sqlite_url, mapping)


def _comparable(row: dict) -> dict:
    # A raw SQLite query returns timestamps as the stored text, servers as datetimes; str() of
    # a datetime is that same text.
    return {k: (str(v) if isinstance(v, datetime) else v) for k, v in row.items()}


def test_load_plain_run_objects_and_report_bad_lines(run_cli, sqlite_url, tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(
        json.dumps({"projectId": "p", "runName": "1", "status": "DONE", "envs": {"A": "1"}})
        + "\n{broken\n"
        + json.dumps({"status": "no pair"})
        + "\n"
        + json.dumps({"projectId": "p", "runName": 2, "gpuSvrCode": "x"})
        + "\n"
        + json.dumps({"projectId": "p", "runName": "3", "envs": {}})
        + "\n",
        encoding="utf-8",
    )
    result = run_cli("load", str(path), "--db", sqlite_url)
    assert result.exit_code == 1
    assert f"{path}:2: not valid JSON" in result.stdout
    assert f"{path}:3: no projectId and runName" in result.stdout
    assert f"{path}:4: gpuSvrCode" in result.stdout
    assert "Summary: exported 2, failed 3" in result.stdout
    rows = fetch_rows(sqlite_url, "SELECT run_name, status, env_a FROM nsml_runs ORDER BY 1")
    assert rows == [
        {"run_name": "1", "status": "DONE", "env_a": "1"},
        {"run_name": "3", "status": None, "env_a": None},
    ]


def test_load_missing_file_exit_2(run_cli, sqlite_url, tmp_path):
    result = run_cli("load", str(tmp_path / "nope.jsonl"), "--db", sqlite_url)
    assert result.exit_code == 2 and "no such file" in result.stderr


def _plain_runs(*names: str) -> bytes:
    return "".join(json.dumps({"projectId": "p", "runName": n}) + "\n" for n in names).encode()


@pytest.mark.parametrize("compress", [False, True])
def test_load_reads_stdin_plain_or_gzipped(run_cli, sqlite_url, compress):
    data = _plain_runs("1", "2") + b"{broken\n"
    result = run_cli(
        "load", "-", "--db", sqlite_url, input=gzip.compress(data) if compress else data
    )
    assert result.exit_code == 1, result.output
    assert "<stdin>:3: not valid JSON" in result.stdout
    assert "Summary: exported 2, failed 1" in result.stdout
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 2


def test_load_knows_gzip_by_its_bytes_not_its_name(run_cli, sqlite_url, tmp_path):
    path = tmp_path / "runs.jsonl"  # gzip inside, no .gz suffix
    path.write_bytes(gzip.compress(_plain_runs("1", "2", "3")))
    result = run_cli("load", str(path), "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 3


def test_load_reads_a_named_pipe(sqlite_url, tmp_path):
    fifo = tmp_path / "runs.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsml_etl.cli", "load", str(fifo), "--db", sqlite_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with open(fifo, "wb") as producer:  # opens once the load opens its end
        producer.write(_plain_runs("1", "2"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 2


def test_load_a_directory_exit_2_and_no_table(run_cli, sqlite_url, tmp_path):
    result = run_cli("load", str(tmp_path), "--db", sqlite_url)
    assert result.exit_code == 2 and "is a directory" in result.stderr
    assert not (tmp_path / "runs.db").exists()


def test_dry_run_sends_nothing_and_writes_nothing(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    open(tmp_path / "runs.db", "w").close()  # an existing, empty database file
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        simulator.base_url,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert f"would fetch {len(simulator.pairs())} runs" in result.stdout
    assert simulator.stats.requests == 0
    assert table_names(sqlite_url) == set()


@pytest.mark.parametrize("db_url", ["sqlite", "mysql"], indirect=True)
def test_dry_run_with_skip_finished_says_how_many_it_would_skip(
    run_cli, credentials, simulator, db_url, tmp_path
):
    assert (
        run_cli("export", "--all", "--db", db_url, "--base-url", simulator.base_url).exit_code == 0
    )
    finished = [
        row
        for row in fetch_rows(db_url, "SELECT project_id, run_name, status FROM nsml_runs")
        if row["status"] in TERMINAL_STATUSES
    ]
    assert 0 < len(finished) < len(simulator.pairs())
    sent = simulator.stats.requests

    def dry_run(*args: str):
        result = run_cli(
            "export", *args, "--skip-finished", "--dry-run", "--db", db_url,
            "--base-url", simulator.base_url,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return result

    # Regression: the plan did not say how many stored runs --skip-finished would leave out.
    assert f"skipping {len(finished)} runs already stored as finished" in dry_run("--all").stdout
    project = finished[0]["project_id"]
    of_project = [r for r in finished if r["project_id"] == project]
    out = dry_run("--project", project).stdout
    assert f"skipping {len(of_project)} runs already stored as finished" in out
    pairs_file = write_pairs(tmp_path / "pairs.csv", [(project, of_project[0]["run_name"])])
    event = json.loads(dry_run("--pairs", str(pairs_file), "--log-format", "json").stdout)
    assert (event["event"], event["requested"], event["skipped"]) == ("dry_run", 1, 1)
    assert simulator.stats.requests == sent  # still no request


def test_json_log_events(run_cli, credentials, simulator, sqlite_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs() + [("nope", "1")])
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        simulator.base_url,
        "--log-format",
        "json",
        "--chunk-size",
        "10",
    )
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "batch_started" and names[-1] == "batch_finished"
    assert names.count("chunk_committed") == 3 and "pair_failed" in names
    failed = next(e for e in events if e["event"] == "pair_failed")
    assert failed["project_id"] == "nope" and failed["status"] == 404
    assert events[-1]["exported"] == len(simulator.pairs()) and events[-1]["failed"] == 1
    assert SECRET_KEY not in result.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_fetching_commits_what_was_fetched(
    make_simulator, sqlite_url, tmp_path, signum, code
):
    sim = make_simulator(projects=1, runs_per_project=200, latency=0.05)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nsml_etl.cli",
            "export",
            "--pairs",
            str(pairs_file),
            "--db",
            sqlite_url,
            "--base-url",
            sim.base_url,
            "--concurrency",
            "2",
            "--chunk-size",
            "5",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while sim.stats.requests < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    exported = int(out.split("Summary: exported ")[1].split(",")[0])
    rows = fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"]
    assert rows == exported >= 20 and exported < 200
    assert exported == sim.stats.requests  # everything fetched was kept


@pytest.mark.parametrize(
    ("tty", "quiet", "bar"), [(True, False, True), (True, True, False), (False, False, False)]
)
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(simulator, tmp_path, tty, quiet, bar):
    total = len(simulator.pairs())
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    raw = tmp_path / "runs.jsonl"
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    quiet_flag = ["--quiet"] if quiet else []
    code, out, err = run_with_terminal_stderr(
        [
            "export",
            "--pairs",
            str(pairs_file),
            "--db",
            db,
            "--base-url",
            simulator.base_url,
            "--save-raw",
            str(raw),
            *quiet_flag,
        ],
        tty,
    )
    assert code == 0, (out, err)
    assert f"Summary: exported {total}" in out  # the summary always, on stdout
    assert (f"{total}/{total}" in err and "run/s" in err) is bar, err
    code, out, err = run_with_terminal_stderr(["load", str(raw), "--db", db, *quiet_flag], tty)
    assert code == 0, (out, err)
    assert f"Summary: exported {total}" in out
    assert (f"{total}run" in err and "run/s" in err) is bar, err


def test_a_terminal_reporting_0_columns_still_gets_a_bar(simulator, tmp_path):
    # Regression: tqdm sized the line to the 0 columns the terminal reported (less one): a bar
    # one character wide, and the line cut off before its end.
    total = len(simulator.pairs())
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    code, out, err = run_with_terminal_stderr(
        ["export", "--pairs", str(pairs_file), "--db", db, "--base-url", simulator.base_url],
        True,
        columns=0,
    )
    assert code == 0, (out, err)
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{total}/{total}" in last and "run/s" in last and last.endswith("]"), err
    bar = last.split("|")[1]
    assert len(bar) >= 10 and len(last) <= 80, last


def test_verbose_logs_every_request_with_its_attempt(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    # Every path fails twice (503), then succeeds: attempts 1 and 2 fail, attempt 3 lands.
    sim = make_simulator(
        projects=1,
        runs_per_project=8,
        fault_rate=1.0,
        fault_streak=2,
        fault_kinds=("503",),
        retry_after=0,
        latency=0.02,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    common = (
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--backoff-initial",
        "0.01",
        "--verbose",
    )
    result = run_cli(*common, "--log-format", "json")
    assert result.exit_code == 0, result.output
    requests = [e for e in map(json.loads, result.stderr.splitlines()) if e["event"] == "request"]
    assert len(requests) == sim.stats.requests  # one event per request sent
    for entry in requests:
        assert entry["method"] == "GET" and entry["path"].startswith("/nsml/v1/projects/")
        assert entry["status"] == (200 if entry["attempt"] == 3 else 503)
        # The simulator sleeps 20 ms before each answer: a latency measured from the wrong
        # moment (after the response, or a unit off) falls below it.
        assert entry["latency_ms"] >= 20
    assert len(requests) == 3 * 8
    text = run_cli(*common).stderr
    assert " -> 503 in " in text and "(attempt 2)" in text


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_load_and_commits_what_was_read(tmp_path, sqlite_url, signum, code):
    total = 40_000
    path = tmp_path / "runs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(total):
            handle.write(json.dumps({"projectId": "p", "runName": str(i)}) + "\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nsml_etl.cli",
            "load",
            str(path),
            "--db",
            sqlite_url,
            "--chunk-size",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # signal once the first chunks are in
        if (tmp_path / "runs.db").exists() and "nsml_runs" in table_names(sqlite_url):
            break
        time.sleep(0.02)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    exported = int(out.split("Summary: exported ")[1].split(",")[0])
    assert 0 < exported < total
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == exported
    (batch,) = fetch_rows(sqlite_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": exported}
