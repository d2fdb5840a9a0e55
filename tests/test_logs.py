"""--log-format json: every line of stdout and stderr is one JSON object, for log shippers;
every event is documented in the README."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    CliProcess,
    fetch_rows,
    run_with_terminal_stderr,
    wait_for,
    write_pairs,
)

from nsml_etl.transform import TERMINAL_STATUSES

ROOT = Path(__file__).parent.parent
COMMON_FIELDS = {"time", "level", "event", "message"}


def _events(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (json.loads fails the test on any other line)."""
    events = [json.loads(line) for line in text.splitlines()]
    for entry in events:
        assert COMMON_FIELDS <= entry.keys(), entry
        assert entry["level"] in ("debug", "info", "warning", "error"), entry
    return events


def _names(events: list[dict]) -> list[str]:
    return [entry["event"] for entry in events]


def _export(run_cli, sim, pairs_file, db_url, *extra):
    return run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--log-format",
        "json",
        *extra,
    )


def test_success_is_events_only(run_cli, credentials, simulator, db_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = _export(run_cli, simulator, pairs_file, db_url, "--skip-finished")
    assert result.exit_code == 0
    assert result.stdout == ""  # the summary is the batch_finished event
    events = _events(result.stderr)
    assert _names(events)[0] == "batch_started" and _names(events)[-1] == "batch_finished"
    finished = events[-1]
    assert finished["level"] == "info"
    assert (finished["exported"], finished["failed"], finished["skipped"]) == (
        len(simulator.pairs()),
        0,
        0,
    )
    assert "error" not in _names(events)


def test_partial_failure_is_a_warning_per_pair(run_cli, credentials, simulator, db_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs() + [("nope", "1")])
    assert _export(run_cli, simulator, pairs_file, db_url).exit_code == 1
    # again with --skip-finished and -q, which print more and less in text mode
    result = _export(run_cli, simulator, pairs_file, db_url, "--skip-finished", "-q")
    assert result.exit_code == 1
    assert result.stdout == ""
    events = _events(result.stderr)
    (failed,) = [e for e in events if e["event"] == "pair_failed"]
    assert failed["level"] == "warning"
    assert (failed["project_id"], failed["run_name"], failed["status"], failed["attempts"]) == (
        "nope",
        "1",
        404,
        1,
    )
    finished = events[-1]
    assert finished["event"] == "batch_finished" and finished["failed"] == 1
    # What the text mode's "Skipped N runs" line says: every run stored as finished (15 of the
    # simulator's 24), not merely some.
    stored = fetch_rows(db_url, "SELECT status FROM nsml_runs")
    finished_runs = [row for row in stored if row["status"] in TERMINAL_STATUSES]
    assert finished["skipped"] == len(finished_runs) == 15
    assert "error" not in _names(events)


def test_auth_failure_is_an_error_event(
    run_cli, credentials, simulator, sqlite_url, tmp_path, monkeypatch
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    monkeypatch.setenv("NCP_SECRET_KEY", "wrong-secret")
    result = _export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 3
    assert result.stdout == ""
    events = _events(result.stderr)
    assert _names(events) == ["batch_started", "batch_finished", "error"]
    assert events[1]["auth_failed"] is True
    error = events[-1]
    assert error["level"] == "error" and error["kind"] == "authentication"
    assert error["exit_code"] == 3
    assert error["message"].startswith("authentication failed: HTTP 401")
    assert "wrong-secret" not in result.stderr and SECRET_KEY not in result.stderr


def test_bad_pairs_are_one_error_event_with_the_lines(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("project_id,run_name\np,1\np,\n" + "p,..\n" * 22)
    result = _export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 2
    assert result.stdout == ""
    (error,) = _events(result.stderr)
    assert error["event"] == "error" and error["kind"] == "input" and error["exit_code"] == 2
    assert error["message"] == f"{pairs_file}: 23 bad lines; fix them and run again"
    assert error["lines"][0] == f"{pairs_file}:3: run_name is empty"
    assert len(error["lines"]) == 20 and error["more"] == 3
    assert simulator.stats.requests == 0
    # one bad line: the message is that line, as in text mode
    pairs_file.write_text("project_id,run_name\np,1\np,\n")
    (error,) = _events(_export(run_cli, simulator, pairs_file, sqlite_url).stderr)
    assert error["message"] == f"{pairs_file}:3: run_name is empty"
    assert error["lines"] == [error["message"]] and error["more"] == 0


@pytest.mark.parametrize(
    ("url", "kind", "code"),
    [
        ("nosuchdb://x/y", "database", 4),
        ("not a url", "input", 2),
    ],
)
def test_bad_database_is_an_error_event(run_cli, credentials, simulator, tmp_path, url, kind, code):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = _export(run_cli, simulator, pairs_file, url)
    assert result.exit_code == code
    assert result.stdout == ""
    (error,) = _events(result.stderr)
    assert (error["event"], error["kind"], error["exit_code"]) == ("error", kind, code)
    assert error["message"].startswith("--db")


def test_a_library_warning_is_an_event_too(simulator, tmp_path):
    """Python warnings (here SQLAlchemy's about a URL option it ignores) are log events, not
    text on stderr. Regression: two lines of 'database.py:75: SAWarning: ...' and its source
    line broke a shipper's JSON."""
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    db_url = f"sqlite:///{tmp_path / 'runs.db'}?mode=ro"  # mode needs uri=true: ignored
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    proc = subprocess.run(
        [sys.executable, "-m", "nsml_etl.cli", "export", "--pairs", str(pairs_file)]
        + ["--db", db_url, "--base-url", simulator.base_url, "--log-format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    events = _events(proc.stderr)
    (warning,) = [e for e in events if "SAWarning" in e["message"]]
    assert (warning["event"], warning["level"]) == ("log", "warning")
    assert warning["message"].startswith("SAWarning: Query string argument(s) 'mode'")
    assert _names(events)[-1] == "batch_finished"


def test_usage_errors_are_error_events_too(run_cli, credentials, simulator, sqlite_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = _export(run_cli, simulator, pairs_file, sqlite_url, "--concurrency", "0")
    assert result.exit_code == 2
    (error,) = _events(result.stderr)
    assert (error["kind"], error["exit_code"]) == ("usage", 2)
    assert "--concurrency" in error["message"]
    # the option anywhere on the line, in either spelling, and for every command that has it
    for args in (
        ["export", "--nope", "--log-format=json"],
        ["load", "--log-format", "json"],
        ["pairs", "--log-format", "json"],
        ["export", "--log-format", "text", "--log-format", "json", "--chunk-size", "x"],
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, args
        assert [e["kind"] for e in _events(result.stderr)] == ["usage"], args
        assert result.stdout == ""
    # without it, click's own text as before
    result = run_cli("export", "--concurrency", "0")
    assert result.exit_code == 2 and "export [OPTIONS]" in result.stderr
    assert "Error: Invalid value for '--concurrency'" in result.stderr


def test_missing_credentials_and_a_run_list_that_breaks_off(
    run_cli, credentials, make_simulator, sqlite_url, monkeypatch
):
    sim = make_simulator(projects=1, runs_per_project=3, fault_rate=1.0, fault_kinds=("500",))
    result = run_cli(
        "export",
        "--all",
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--max-attempts",
        "1",
        "--log-format",
        "json",
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    events = _events(result.stderr)
    assert _names(events)[-2:] == ["batch_finished", "error"]
    assert (events[-1]["kind"], events[-1]["exit_code"]) == ("run_list", 1)
    assert events[-1]["message"].startswith("run list page 1: HTTP 500")
    monkeypatch.delenv("NCP_ACCESS_KEY")
    result = run_cli("pairs", "--out", "-", "--base-url", sim.base_url, "--log-format", "json")
    assert result.exit_code == 2 and result.stdout == ""
    (error,) = _events(result.stderr)
    assert error["message"].startswith("NCP_ACCESS_KEY is not set")


def test_dry_run_is_one_event_on_stdout(run_cli, credentials, simulator, sqlite_url, tmp_path):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    result = _export(run_cli, simulator, pairs_file, sqlite_url, "--dry-run")
    assert result.exit_code == 0
    (plan,) = _events(result.stdout)
    assert plan["event"] == "dry_run" and plan["mode"] == "pairs"
    assert plan["requested"] == len(pairs) and plan["more"] == len(pairs) - 20
    assert plan["preview"][0] == {"project_id": pairs[0][0], "run_name": pairs[0][1]}
    assert len(plan["preview"]) == 20
    assert plan["db_url"] == sqlite_url and plan["base_url"] == simulator.base_url
    assert _events(result.stderr) == []
    assert simulator.stats.requests == 0
    result = run_cli(
        "export",
        "--project",
        "p1",
        "--db",
        sqlite_url,
        "--base-url",
        simulator.base_url,
        "--dry-run",
        "--log-format",
        "json",
    )
    (plan,) = _events(result.stdout)
    assert (plan["mode"], plan["projects"], plan["requested"]) == ("projects", ["p1"], None)


def test_load_and_pairs_speak_json_too(run_cli, credentials, simulator, sqlite_url, tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"projectId": "p", "runName": "1"}) + "\n" + "not json\n")
    result = run_cli("load", str(raw), "--db", sqlite_url, "--log-format", "json")
    assert result.exit_code == 1 and result.stdout == ""
    events = _events(result.stderr)
    (failed,) = [e for e in events if e["event"] == "pair_failed"]
    assert failed["level"] == "warning" and failed["project_id"] is None
    assert failed["reason"].startswith(f"{raw}:2: ")
    assert events[-1]["event"] == "batch_finished" and events[-1]["exported"] == 1
    result = run_cli(
        "load", str(tmp_path / "missing.jsonl"), "--db", sqlite_url, "--log-format", "json"
    )
    assert result.exit_code == 2
    assert [e["event"] for e in _events(result.stderr)] == ["error"]
    out = tmp_path / "pairs.csv"
    result = run_cli(
        "pairs", "--out", str(out), "--base-url", simulator.base_url, "--log-format", "json"
    )
    assert result.exit_code == 0 and result.stdout == ""
    written = _events(result.stderr)[-1]
    assert (written["event"], written["pairs"], written["path"]) == (
        "pairs_written",
        len(simulator.pairs()),
        str(out),
    )


def test_no_progress_bar_on_a_terminal(simulator, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    code, out, err = run_with_terminal_stderr(
        [
            "export",
            "--pairs",
            str(pairs_file),
            "--db",
            f"sqlite:///{tmp_path / 'runs.db'}",
            "--base-url",
            simulator.base_url,
            "--log-format",
            "json",
        ],
        stderr_tty=True,
    )
    assert code == 0, (out, err)
    assert out == ""
    assert _names(_events(err.replace("\r\n", "\n")))[-1] == "batch_finished"


def test_signals_are_events(make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=400, latency=0.05, slow_seconds=120)
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
        "2",
        "--log-format",
        "json",
    )
    wait_for(lambda: sim.stats.requests >= 10)
    sim.set_faults(1.0, ("slow",))  # requests now hang: the export waits when signalled again
    proc.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: '"event": "signal"' in proc.stderr())
    proc.proc.send_signal(signal.SIGTERM)
    out, err = proc.finish(143)
    assert out == ""
    events = _events(err)
    signals = [(e["signal"], e["again"], e["level"]) for e in events if e["event"] == "signal"]
    assert signals == [("SIGTERM", False, "warning"), ("SIGTERM", True, "warning")]
    assert events[-1]["event"] == "batch_finished" and events[-1]["interrupted"] is True


def test_every_event_is_in_the_readme():
    """Each event name the code emits has its row in the README's table of events."""
    source = "\n".join(path.read_text() for path in (ROOT / "etl").rglob("*.py"))
    emitted = set(re.findall(r'\bevent\(\s*"(\w+)"', source))
    emitted |= set(re.findall(r'json_line\(\s*"\w+",\s*"(\w+)"', source))
    assert {"batch_started", "pair_failed", "batch_finished", "error", "signal"} <= emitted
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Output and logs\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE))
    assert emitted | {"log"} <= documented, sorted(emitted - documented)


def test_ctrl_c_where_no_export_runs_is_an_error_event(make_simulator, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=3, latency=60)
    proc = CliProcess(
        tmp_path,
        "pairs",
        "--out",
        str(tmp_path / "pairs.csv"),
        "--base-url",
        sim.base_url,
        "--log-format",
        "json",
    )
    wait_for(lambda: sim.stats.requests >= 1)  # the first list page hangs
    proc.proc.send_signal(signal.SIGINT)
    out, err = proc.finish(130)
    assert out == ""
    assert [(e["event"], e["kind"], e["exit_code"]) for e in _events(err)] == [
        ("error", "interrupted", 130)
    ]
