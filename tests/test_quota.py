"""A spent API quota (429 errorCode 400) stops the export; throttling (410/420) is backed off.

Regression: every 429 was retried alike, so against a spent quota an export of 150 runs sent 600
more requests (5 attempts each), all refused, and then reported 120 failed pairs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from conftest import ACCESS_KEY, SECRET_KEY, export_args, fetch_rows, write_pairs

import nsml_etl
from nsml_etl.nsml.client import interpret, is_quota_answer, is_throttling
from nsml_etl.nsml.throttle import QuotaGuard

QUOTA = 15
RUNS = 40
CONCURRENCY = 4
# After the quota runs out: the requests in flight then, and the one that confirms it.
AFTER_QUOTA_MAX = CONCURRENCY + 1
LEFT_NOTE = "the next export after the quota resets continues (with --skip-finished)"


def _response(status: int, body: bytes) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    resp.reason = "Too Many Requests"
    return resp


def _refusal(body: bytes) -> Exception:
    try:
        interpret(_response(429, body))
    except Exception as exc:  # the ApiError interpret raises for a 429
        return exc
    raise AssertionError("a 429 was taken for an answer")


@pytest.mark.parametrize("code", [b'"400"', b"400"])  # errorCode as a string or a number
def test_a_429_with_errorcode_400_is_the_quota(code):
    exc = _refusal(b'{"error": {"errorCode": ' + code + b', "message": "Quota Exceeded"}}')
    assert is_quota_answer(exc) and not is_throttling(exc)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"errorCode": "410", "message": "Throttle Limited"}}',
        b'{"error": {"errorCode": 420, "message": "Rate Limited"}}',
        b"<html>Too Many Requests</html>",
    ],
)
def test_other_429s_are_throttling(body):
    exc = _refusal(body)
    assert is_throttling(exc) and not is_quota_answer(exc)


def test_the_guard_needs_a_second_refusal_and_a_later_success_clears_a_stray_one():
    guard = QuotaGuard()
    before = guard.ticket()  # sent before the first refusal came back
    guard.ticket()
    assert not guard.refused("HTTP 429 errorCode 400: Quota Exceeded")
    guard.answered(before)  # answered late, but sent before: proves nothing
    after = guard.ticket()
    guard.answered(after)  # sent after the refusal and let through: it was a stray one
    assert not guard.refused("HTTP 429 errorCode 400: Quota Exceeded") and not guard.spent
    assert guard.refused("HTTP 429 errorCode 400: Quota Exceeded")  # twice in a row: spent
    assert guard.spent


def _export_args(sim, pairs_file, db_url, *extra, concurrency=CONCURRENCY):
    return export_args(sim, pairs_file, db_url, "--concurrency", str(concurrency), *extra)


def _batch(db_url):
    (batch,) = fetch_rows(
        db_url, "SELECT status, requested, exported, failed, error FROM nsml_export_batches"
    )
    return batch


def _stored(db_url) -> int:
    return fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"]


def test_a_spent_quota_stops_the_export_and_the_next_one_continues(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=QUOTA)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    failures = tmp_path / "failures.csv"
    result = run_cli(*_export_args(sim, pairs_file, db_url, "--failures-out", str(failures)))
    assert result.exit_code == 1, result.output
    assert sim.stats.requests - QUOTA <= AFTER_QUOTA_MAX  # not 5 attempts per pair left
    assert _stored(db_url) == QUOTA  # every run answered before the quota ran out landed
    left = RUNS - QUOTA
    assert result.stdout.startswith(f"Summary: exported {QUOTA}, failed 0, ")
    assert result.stdout.rstrip().endswith(
        f"; API quota exhausted: {left} runs not attempted; {LEFT_NOTE}"
    )
    assert result.stderr.startswith(
        "Error: API quota exhausted: HTTP 429 errorCode 400: Quota Exceeded"
    )
    batch = _batch(db_url)
    assert batch["error"].startswith("API quota exhausted: HTTP 429 errorCode 400")
    assert batch["error"].endswith(f"; {left} runs not attempted")
    assert (batch["status"], batch["requested"], batch["exported"], batch["failed"]) == (
        "quota_exhausted",
        RUNS,
        QUOTA,
        0,
    )
    # Runs not attempted are not failed pairs: neither recorded nor in --failures-out.
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_export_failures") == [{"n": 0}]
    assert failures.read_text().splitlines() == ["project_id,run_name,reason"]
    # A freshness dashboard does not show it green.
    assert run_cli("views", "--db", db_url).exit_code == 0
    assert fetch_rows(
        db_url,
        "SELECT last_successful_export, partial_exports, unsuccessful_exports "
        "FROM nsml_export_freshness",
    ) == [{"last_successful_export": None, "partial_exports": 0, "unsuccessful_exports": 1}]

    sim.set_quota(None)  # the next day
    again = run_cli(*_export_args(sim, pairs_file, db_url, "--skip-finished"))
    assert again.exit_code == 0, again.output
    assert _stored(db_url) == RUNS


def test_a_spent_quota_through_the_python_api(credentials, make_simulator, db_url):
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=QUOTA)
    report = nsml_etl.export(
        sim.pairs(),
        db_url=db_url,
        base_url=sim.base_url,
        concurrency=CONCURRENCY,
        backoff_initial=0.01,
    )
    assert isinstance(report.quota_error, nsml_etl.QuotaExhausted)
    assert isinstance(report.quota_error, nsml_etl.EtlError)
    assert (report.exit_code, report.ok, report.failed) == (1, False, [])
    assert (report.exported, report.not_attempted) == (QUOTA, RUNS - QUOTA)
    assert f"API quota exhausted: {RUNS - QUOTA} runs not attempted; {LEFT_NOTE}" in (
        report.summary()
    )
    assert sim.stats.requests - QUOTA <= AFTER_QUOTA_MAX
    assert _stored(db_url) == QUOTA
    assert _batch(db_url)["status"] == "quota_exhausted"


def test_the_quota_event_and_counts_in_json_logs(run_cli, credentials, make_simulator, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=QUOTA)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = run_cli(*_export_args(sim, pairs_file, db_url, "--log-format", "json"))
    assert result.exit_code == 1 and result.stdout == ""
    events = {e["event"]: e for e in map(json.loads, result.stderr.splitlines())}
    finished = events["batch_finished"]
    assert (finished["quota_exhausted"], finished["not_attempted"]) == (True, RUNS - QUOTA)
    assert (finished["exported"], finished["failed"]) == (QUOTA, 0)
    assert events["error"]["kind"] == "quota" and events["error"]["exit_code"] == 1
    assert "pair_failed" not in events


def test_the_run_list_hitting_a_spent_quota_stops_the_same_way(
    run_cli, credentials, make_simulator, db_url
):
    # Pages of 5: the list and the fetches spend the quota together, and it runs out mid-way.
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=QUOTA, max_page_size=5)
    result = run_cli(
        "export",
        "--all",
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "2",
        "--backoff-initial",
        "0.01",
    )
    assert result.exit_code == 1, result.output
    assert sim.stats.requests - QUOTA <= 2 + 2  # the run list's request is in flight too
    assert "API quota exhausted: " in result.stdout
    assert f"runs not attempted and the rest of the run list unread; {LEFT_NOTE}" in result.stdout
    batch = _batch(db_url)
    assert batch["status"] == "quota_exhausted" and batch["failed"] == 0
    assert 0 < batch["exported"] == _stored(db_url) < QUOTA  # some of the quota went on pages


def test_the_run_list_refused_from_the_first_page(credentials, make_simulator, db_url):
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=0)
    report = nsml_etl.export(
        all_runs=True, db_url=db_url, base_url=sim.base_url, backoff_initial=0.01
    )
    assert sim.stats.requests == 2  # the refusal and the request that confirmed it
    assert report.exit_code == 1 and report.list_unread and report.exported == 0
    assert "the rest of the run list unread" in report.summary()
    assert _batch(db_url)["status"] == "quota_exhausted"


def test_stray_quota_answers_between_successes_do_not_stop_the_export(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    # Every run's first request is refused "Quota Exceeded", its retry succeeds: never two
    # refusals in a row, so the quota is not spent.
    sim = make_simulator(
        projects=1, runs_per_project=10, fault_rate=1.0, fault_kinds=("429-quota",), fault_streak=1
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(*_export_args(sim, pairs_file, sqlite_url, concurrency=1))
    assert result.exit_code == 0, result.output
    assert sim.stats.faults["429-quota"] == 10 and "retried 10," in result.stdout
    assert _stored(sqlite_url) == 10
    assert _batch(sqlite_url)["status"] == "succeeded"


def test_one_stray_quota_answer_through_the_python_api(credentials, make_simulator, sqlite_url):
    sim = make_simulator(projects=1, runs_per_project=20)
    sim.queue_faults("429-quota")
    report = nsml_etl.export(
        sim.pairs(),
        db_url=sqlite_url,
        base_url=sim.base_url,
        concurrency=CONCURRENCY,
        backoff_initial=0.01,
    )
    assert report.ok and report.quota_error is None and report.exported == 20
    assert report.retried == 1 and sim.stats.faults["429-quota"] == 1


@pytest.mark.parametrize("kind", ["429", "429-no-retry-after", "429-no-code"])
def test_throttling_is_backed_off_and_retried_to_success(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path, kind
):
    # errorCode 410 (with Retry-After), 420, and a 429 with no code at all (a proxy's page).
    sim = make_simulator(
        projects=1,
        runs_per_project=30,
        fault_rate=0.5,
        fault_kinds=(kind,),
        fault_streak=3,
        retry_after=0,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(
        *_export_args(sim, pairs_file, sqlite_url, "--max-attempts", "5"), "--log-format", "json"
    )
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(e["event"] == "throttled" for e in events)  # the concurrency cap came down
    finished = next(e for e in events if e["event"] == "batch_finished")
    assert finished["retried"] == sim.stats.faults[kind] > 0
    assert not finished["quota_exhausted"]
    assert _stored(sqlite_url) == 30


def test_simulate_quota_option(credentials, tmp_path, sqlite_url):
    """``simulate --quota`` as a user runs it, with an export in a second process."""
    address, pairs_file = tmp_path / "address.txt", tmp_path / "pairs.csv"
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    command = [sys.executable, "-m", "nsml_etl.cli"]
    with subprocess.Popen(
        [
            *command,
            "simulate",
            "--port",
            "0",
            "--runs",
            "10",
            "--projects",
            "1",
            "--quota",
            "4",
            "--address-file",
            str(address),
            "--write-pairs",
            str(pairs_file),
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
                [
                    *command,
                    "export",
                    "--pairs",
                    str(pairs_file),
                    "--base-url",
                    address.read_text().strip(),
                    "--db",
                    sqlite_url,
                    "--concurrency",
                    "1",
                    "--backoff-initial",
                    "0.01",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.terminate()
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("Summary: exported 4, failed 0, ")
    assert f"API quota exhausted: 6 runs not attempted; {LEFT_NOTE}" in result.stdout
    assert "Traceback" not in result.stderr and SECRET_KEY not in result.stdout + result.stderr


def test_check_says_the_quota_is_spent_not_to_try_again_in_a_minute(
    run_cli, credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=1, runs_per_project=1, quota=0)
    result = run_cli("check", "--base-url", sim.base_url, "--db", sqlite_url)
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stdout.splitlines() if "credentials:" in line]
    assert "HTTP 429 errorCode 400: Quota Exceeded" in line
    assert line.endswith("the API key's day or month quota is spent: exports resume once it resets")


def test_pairs_stops_on_a_spent_quota_and_writes_no_half_file(
    run_cli, credentials, make_simulator, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=RUNS, quota=2, max_page_size=5)
    out = tmp_path / "pairs.csv"
    result = run_cli(
        "pairs", "--out", str(out), "--base-url", sim.base_url, "--backoff-initial", "0.01"
    )
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "Error: API quota exhausted: HTTP 429 errorCode 400: Quota Exceeded (the quota is spent)\n"
    )
    assert sim.stats.requests == 2 + 2  # two pages, the refusal and its confirmation
    assert not out.exists()
