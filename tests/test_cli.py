"""The CLI's small edges: help texts that fit their command, --quiet, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

from conftest import CliProcess, wait_for, write_pairs


def test_simulate_on_a_busy_port_is_one_line_and_exit_2(run_cli, credentials, simulator):
    port = urlsplit(simulator.base_url).port  # the fixture's simulator holds it
    result = run_cli("simulate", "--port", str(port))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in "
        "use; choose another --port (0 picks a free one)\n"
    )
    assert result.stdout == ""


def test_simulate_with_an_address_file_it_cannot_write_is_one_line_and_exit_2(
    run_cli, credentials, tmp_path
):
    # Regression: the OSError escaped as "unexpected FileNotFoundError ... this is a bug",
    # exit 70.
    address = tmp_path / "missing" / "address.txt"
    result = run_cli("simulate", "--port", "0", "--address-file", str(address))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: --address-file {address}: cannot write: No such file or directory\n"
    )
    assert list(tmp_path.iterdir()) == []


def _option_help(run_cli, command: str, option: str) -> str:
    """The help text of one option of ``nsml-etl COMMAND --help``, on one line."""
    text = run_cli(command, "--help").stdout
    block = text.split(option, 1)[1].split("\n  -", 1)[0]
    return " ".join(block.split())


def test_help_says_what_each_command_does_with_the_option(run_cli):
    # load and pairs copied export's help: load sends no request, pairs retries list pages.
    assert "request" in _option_help(run_cli, "export", "--verbose")
    assert "request" not in _option_help(run_cli, "load", "--verbose")
    assert "chunk" in _option_help(run_cli, "load", "--verbose")
    assert "chunk" not in _option_help(run_cli, "pairs", "--verbose")
    assert "request" in _option_help(run_cli, "pairs", "--verbose")
    assert "per run before" in _option_help(run_cli, "export", "--max-attempts")
    assert "page of the run list" in _option_help(run_cli, "pairs", "--max-attempts")


def test_quiet_prints_only_failures_and_the_summary(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs + [("nope", "1")])
    common = (
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        simulator.base_url,
        "--skip-finished",
    )
    assert run_cli(*common).exit_code == 1
    loud = run_cli(*common)
    assert "Skipped " in loud.stdout  # as before, without --quiet
    quiet = run_cli(*common, "--quiet")
    assert quiet.exit_code == 1
    lines = quiet.stdout.splitlines()
    assert lines[0] == "Failed pairs (1):" and lines[1].startswith("  nope\t1\tHTTP 404")
    assert lines[2].startswith("Summary: exported ") and len(lines) == 3
    assert quiet.stderr == ""


def test_verbose_prints_the_summary_once(run_cli, credentials, simulator, sqlite_url, tmp_path):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs() + [("nope", "1")])
    raw = tmp_path / "raw.jsonl"
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
        "-v",
    )
    assert result.exit_code == 1
    assert (result.stdout + result.stderr).count("Summary: ") == 1
    assert result.stdout.count("nope\t1") == 1  # listed once above the summary
    assert "pair failed: nope/1: HTTP 404" in result.stderr  # and logged as it happened
    loaded = run_cli("load", str(raw), "--db", sqlite_url, "-v")
    assert loaded.exit_code == 0
    assert (loaded.stdout + loaded.stderr).count("Summary: ") == 1
    assert "committed chunk 1" in loaded.stderr


def test_a_reader_that_quits_early_is_exit_141_without_a_message(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    run_cli(
        "export", "--pairs", str(pairs_file), "--db", sqlite_url, "--base-url", simulator.base_url
    )
    # `nsml-etl report | true`: the pipe's reader is gone before the report is written.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nsml_etl.cli", "report", "--db", sqlite_url, "--limit", "0"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_ctrl_c_where_no_export_runs_is_exit_130(make_simulator, tmp_path):
    # Regression: in text mode click caught the KeyboardInterrupt, printed "Aborted!" and
    # exited 1, which the README reserves for failed pairs (JSON mode already said 130).
    sim = make_simulator(projects=1, runs_per_project=3, latency=60)
    out = tmp_path / "pairs.csv"
    proc = CliProcess(tmp_path, "pairs", "--out", str(out), "--base-url", sim.base_url)
    wait_for(lambda: sim.stats.requests >= 1)  # the first list page hangs
    proc.proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.finish(130)  # and neither a traceback nor "Aborted!"
    assert (stdout, stderr) == ("", "Error: interrupted\n")
    assert not out.exists()
