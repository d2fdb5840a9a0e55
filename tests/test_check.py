"""``nsml-etl check``: the database, the credentials, the API key and the clock, one line each,
through the real CLI against the simulator and real databases; exit codes as for export."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ACCESS_KEY, SECRET_KEY, table_names, write_pairs

NAMES = ["database", "credentials", "API key", "clock"]


def _lines(result) -> dict[str, str]:
    """{check name: 'OK: ...' or 'FAIL: ...'}, after checking the output's shape."""
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.output
    found = {}
    for line, name in zip(lines, NAMES, strict=True):
        status, _, rest = line.partition(": ")
        assert status in ("OK", "FAIL") and rest.startswith(f"{name}: "), line
        if status == "FAIL":
            assert " — " in rest, line  # says what to do
        found[name] = line
    return found


def _check(run_cli, *args):
    return run_cli("check", *args)


def test_all_ok_against_the_simulator_and_nothing_is_created(
    run_cli, credentials, simulator, tmp_path
):
    database = tmp_path / "new" / "runs.db"
    database.parent.mkdir()
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", f"sqlite:///{database}")
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert all(line.startswith("OK: ") for line in lines.values())
    assert "does not exist yet" in lines["database"]
    assert "answered with 2 projects" in lines["credentials"]
    assert "NCP_APIGW_API_KEY is not set" in lines["API key"]
    assert "of the gateway's Date" in lines["clock"]
    # One signed request to the project list, and the missing SQLite file is not created.
    assert simulator.stats.requests == 1
    assert list(simulator.stats.by_path) == ["/nsml/v1/projects?page=1&pageSize=1"]
    assert list(database.parent.iterdir()) == []


def test_a_missing_sqlite_uri_file_is_not_created(run_cli, credentials, simulator, tmp_path):
    # Regression: a file: URI was connected to, which created the file check promises not to.
    database = tmp_path / "runs.db"
    url = f"sqlite:///file:{database}?uri=true"
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", url)
    assert result.exit_code == 0, result.output
    assert "does not exist yet" in _lines(result)["database"]
    assert list(tmp_path.iterdir()) == []
    # and export --dry-run, which writes nothing either
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    dry = run_cli("export", "--pairs", str(pairs), "--db", url, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert list(tmp_path.iterdir()) == [pairs]


def test_ok_on_a_table_an_export_made(run_cli, credentials, simulator, db_url, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:2])
    exported = run_cli(
        "export", "--pairs", str(pairs), "--db", db_url, "--base-url", simulator.base_url
    )
    assert exported.exit_code == 0, exported.output
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "table nsml_runs is an nsml-etl table" in _lines(result)["database"]


def test_a_foreign_table_of_the_same_name_is_exit_4_and_left_alone(
    run_cli, credentials, simulator, db_url
):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE nsml_runs (id INTEGER PRIMARY KEY, note TEXT)")
    engine.dispose()
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", db_url)
    assert result.exit_code == 4, result.output
    lines = _lines(result)
    assert lines["database"].startswith(
        "FAIL: database: table nsml_runs exists but is not an "
        "nsml-etl table: its primary key is (id)"
    )
    assert lines["credentials"].startswith("OK: ")  # the other checks still ran
    assert table_names(db_url) == {"nsml_runs"}  # no bookkeeping table, nothing else


@pytest.mark.parametrize(
    "url, words",
    [
        ("sqlite:///{tmp}/no-such-dir/runs.db", "directory"),
        # Nothing listens on port 1: refused at once, with the password never shown.
        ("postgresql+psycopg://etl:pw-s3cret@127.0.0.1:1/analytics", "cannot connect"),
        ("mysql+pymysql://etl:pw-s3cret@127.0.0.1:1/analytics", "cannot connect"),
        ("oracle://etl@db/analytics", "unsupported database"),
        ("mysql+mysqldb://etl@127.0.0.1/analytics", "driver is not installed — use mysql+pymysql"),
    ],
)
def test_a_wrong_database_is_exit_4(run_cli, credentials, simulator, tmp_path, url, words):
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", url.format(tmp=tmp_path))
    assert result.exit_code == 4, result.output
    lines = _lines(result)
    assert lines["database"].startswith("FAIL: database: ") and words in lines["database"]
    assert lines["credentials"].startswith("OK: ")
    assert "pw-s3cret" not in result.output
    assert not (tmp_path / "no-such-dir").exists()


def test_a_wrong_secret_key_is_exit_3(
    run_cli, credentials, simulator, sqlite_url, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NCP_SECRET_KEY", "wrong-secret-value")
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", sqlite_url)
    assert result.exit_code == 3, result.output
    lines = _lines(result)
    assert lines["credentials"].startswith("FAIL: credentials: the gateway refused GET ")
    assert "HTTP 401 errorCode 200" in lines["credentials"]
    assert "check NCP_ACCESS_KEY and NCP_SECRET_KEY" in lines["credentials"]
    assert lines["API key"].startswith("FAIL: API key: not checked")
    assert lines["clock"].startswith("OK: clock")  # the refusal's Date still tells
    assert "wrong-secret-value" not in result.output and SECRET_KEY not in result.output


@pytest.mark.parametrize(
    "unset", [["NCP_ACCESS_KEY"], ["NCP_SECRET_KEY"], ["NCP_ACCESS_KEY", "NCP_SECRET_KEY"]]
)
def test_missing_credentials_are_exit_2_and_send_nothing(
    run_cli, credentials, simulator, sqlite_url, unset, monkeypatch: pytest.MonkeyPatch
):
    for name in unset:
        monkeypatch.delenv(name)
    result = _check(run_cli, "--base-url", simulator.base_url, "--db", sqlite_url)
    assert result.exit_code == 2, result.output
    lines = _lines(result)
    assert lines["database"].startswith("OK: ")
    assert lines["credentials"].startswith(f"FAIL: credentials: {' and '.join(unset)} ")
    assert "not checked" in lines["API key"] and "not checked" in lines["clock"]
    assert simulator.stats.requests == 0


def test_the_api_key_header(
    run_cli, credentials, make_simulator, sqlite_url, monkeypatch: pytest.MonkeyPatch
):
    sim = make_simulator(projects=1, runs_per_project=1, api_key="gateway-key-1234")
    args = ("--base-url", sim.base_url, "--db", sqlite_url)

    missing = _check(run_cli, *args)
    assert missing.exit_code == 3, missing.output
    lines = _lines(missing)
    assert lines["API key"].startswith("FAIL: API key: the gateway refused GET ")
    assert "export NCP_APIGW_API_KEY" in lines["API key"]
    assert lines["credentials"].startswith("FAIL: credentials: not verified")

    monkeypatch.setenv("NCP_APIGW_API_KEY", "wrong-key-5678")
    wrong = _check(run_cli, *args)
    assert wrong.exit_code == 3, wrong.output
    assert "check NCP_APIGW_API_KEY" in _lines(wrong)["API key"]
    assert "wrong-key-5678" not in wrong.output

    monkeypatch.setenv("NCP_APIGW_API_KEY", "gateway-key-1234")
    right = _check(run_cli, *args)
    assert right.exit_code == 0, right.output
    assert _lines(right)["API key"] == (
        "OK: API key: NCP_APIGW_API_KEY is set and was sent (x-ncp-apigw-api-key); the "
        "gateway took the request"
    )
    assert "gateway-key-1234" not in right.output


def test_a_gateway_clock_past_the_signature_window_is_exit_3(
    run_cli, credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=1, runs_per_project=1, clock_offset=-600)
    result = _check(run_cli, "--base-url", sim.base_url, "--db", sqlite_url)
    assert result.exit_code == 3, result.output
    lines = _lines(result)
    assert lines["clock"].startswith("FAIL: clock: the local clock is ")
    assert "ahead of the gateway's Date" in lines["clock"] and "NTP" in lines["clock"]
    seconds = int(lines["clock"].split("the local clock is ")[1].split(" s ")[0])
    assert 598 <= seconds <= 602
    assert lines["credentials"].startswith("FAIL: credentials: not verified")
    assert "set the clock right first" in lines["credentials"]


def test_a_small_skew_is_a_note(run_cli, credentials, make_simulator, sqlite_url):
    sim = make_simulator(projects=1, runs_per_project=1, clock_offset=120)
    result = _check(run_cli, "--base-url", sim.base_url, "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    clock = _lines(result)["clock"]
    assert clock.startswith("OK: clock: the local clock is ") and "behind" in clock
    assert "(note: enable NTP" in clock


def test_an_unreachable_api_is_exit_1(run_cli, credentials, sqlite_url):
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _check(
        run_cli,
        "--base-url",
        f"http://127.0.0.1:{port}/nsml/v1",
        "--db",
        sqlite_url,
        "--timeout",
        "5",
    )
    assert result.exit_code == 1, result.output
    lines = _lines(result)
    assert "transport error" in lines["credentials"] and "--base-url" in lines["credentials"]


def test_the_simulator_option_for_a_gateway_clock_that_is_off(
    credentials, sqlite_url, tmp_path: Path
):
    """``simulate --gateway-clock-offset`` (here 7 minutes behind), and check as a user runs
    both: two processes."""
    address = tmp_path / "address.txt"
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    command = [sys.executable, "-m", "nsml_etl.cli"]
    with subprocess.Popen(
        [
            *command,
            "simulate",
            "--port",
            "0",
            "--address-file",
            str(address),
            "--gateway-clock-offset",
            "-420",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    ) as server:
        try:
            for _ in range(200):
                if address.exists():
                    break
                time.sleep(0.05)
            result = subprocess.run(
                [*command, "check", "--base-url", address.read_text().strip(), "--db", sqlite_url],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.terminate()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "FAIL: clock: the local clock is 4" in result.stdout  # 420 s, give or take
    assert result.stderr == ""


def test_dry_run_help_does_not_claim_to_check_credentials(run_cli):
    text = " ".join(run_cli("export", "--help").stdout.split())
    dry_run = text.split("--dry-run", 1)[1].split("--", 1)[0]
    assert "that the credentials are set" in dry_run
    assert "'nsml-etl check' tries the credentials" in dry_run
    assert "Check settings, credentials" not in text
    help_text = " ".join(run_cli("check", "--help").stdout.split())
    assert "the credentials, the API key and the clock" in help_text
