"""Numbers and dates that overflow what uses them are usage errors when the settings are read.

Regressions: ``--timeout 1e10`` (or NSML_ETL_TIMEOUT, or ``timeout`` in a config file) passed
``--dry-run`` and then crashed the export with OverflowError ("timestamp out of range for
platform time_t": a socket timeout in nanoseconds), exit 70; a backoff or a Retry-After cap as
large would crash the first wait (threading.TIMEOUT_MAX); ``report --until 9999-12-31``
crashed with OverflowError computing the day after the period."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fetch_rows, write_pairs

import nsml_etl

MAX_SECONDS = 7 * 24 * 3600  # a week, as the README says (nsml_etl.config.MAX_SECONDS)

NSML_ETL = str(Path(sys.executable).parent / "nsml-etl")
SECONDS = ["timeout", "backoff_initial", "backoff_max", "retry_after_max"]


@pytest.mark.parametrize("name", SECONDS)
def test_seconds_past_a_week_are_refused_from_flag_env_and_file(
    run_cli, credentials, simulator, sqlite_url, tmp_path, monkeypatch, name
):
    pairs = str(write_pairs(tmp_path / "pairs.csv", simulator.pairs()))
    dry = ("export", "--pairs", pairs, "--db", sqlite_url, "--base-url", simulator.base_url)
    flag = "--" + name.replace("_", "-")
    result = run_cli(*dry, "--dry-run", flag, "1e10")
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}': must be at most {MAX_SECONDS} seconds" in result.stderr
    env = "NSML_ETL_" + name.upper()
    monkeypatch.setenv(env, "1e10")
    result = run_cli(*dry, "--dry-run")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {env}: must be at most {MAX_SECONDS} seconds (a week) (got '1e10')\n"
    )
    monkeypatch.delenv(env)
    config = tmp_path / "etl.toml"
    config.write_text(f"{name} = 1e10\n")
    result = run_cli(*dry, "--dry-run", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {config}: {name}: must be at most {MAX_SECONDS} seconds (a week) "
        "(got 10000000000.0)\n"
    )
    with pytest.raises(nsml_etl.InputError, match=f"^{name}: must be at most"):
        nsml_etl.export(simulator.pairs(), db_url=sqlite_url, dry_run=True, **{name: 1e10})
    assert simulator.stats.requests == 0


def test_a_rate_slower_than_one_request_a_week_is_refused(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs = str(write_pairs(tmp_path / "pairs.csv", simulator.pairs()))
    result = run_cli("export", "--pairs", pairs, "--db", sqlite_url, "--rate-limit", "1e-12/s")
    assert result.exit_code == 2
    assert "must allow at least one request in 604800 seconds" in result.stderr


def test_the_longest_waits_allowed_export_on_every_database(
    run_cli, credentials, simulator, db_url, tmp_path
):
    pairs = str(write_pairs(tmp_path / "pairs.csv", simulator.pairs()))
    week = str(MAX_SECONDS)
    result = run_cli(
        "export", "--pairs", pairs, "--db", db_url, "--base-url", simulator.base_url,
        "--timeout", week, "--backoff-initial", week, "--backoff-max", week,
        "--retry-after-max", week, "--rate-limit", "100/s",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")
    assert rows[0]["n"] == len(simulator.pairs())
    # And the timeout that crashed is refused before anything is sent.
    result = run_cli(
        "export", "--pairs", pairs, "--db", db_url, "--base-url", simulator.base_url,
        "--timeout", "1e10",
    )  # fmt: skip
    assert result.exit_code == 2


def test_report_days_past_what_a_date_holds_are_exit_2_and_the_bounds_work(
    run_cli, credentials, simulator, db_url, tmp_path
):
    pairs = str(write_pairs(tmp_path / "pairs.csv", simulator.pairs()))
    exported = run_cli("export", "--pairs", pairs, "--db", db_url, "--base-url", simulator.base_url)
    assert exported.exit_code == 0, exported.output
    for option, day in (("--until", "9999-12-31"), ("--since", "0001-01-01")):
        result = run_cli("report", "--db", db_url, option, day)
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == (
            f"Error: {option} {day}: must be between 1970-01-01 and 9998-12-31\n"
        )
    for period in (("--until", "9998-12-31"), ("--since", "1970-01-01", "--until", "1970-03-01")):
        result = run_cli("report", "--db", db_url, "--format", "json", *period)
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "option", ["--latency", "--slow-seconds", "--trickle-seconds", "--retry-after"]
)
def test_simulator_waits_past_a_week_are_refused_before_it_listens(option, credentials):
    # Regression: it served, and each request's handler died of OverflowError in time.sleep
    # (a clock offset as large: in every Date header).
    for value in ("1e10" if option != "--retry-after" else "10000000000", "-1"):
        done = subprocess.run(
            [NSML_ETL, "simulate", "--port", "0", option, value],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr
    done = subprocess.run(
        [NSML_ETL, "simulate", "--port", "0", "--gateway-clock-offset", "1e300"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--gateway-clock-offset" in done.stderr
