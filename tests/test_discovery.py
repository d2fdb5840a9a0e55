"""Run discovery against the simulator: paging edge cases, --all/--project, --skip-finished."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, fetch_rows

from nsml_etl.config import Credentials, Settings
from nsml_etl.nsml.client import NsmlClient
from nsml_etl.nsml.discovery import discover_runs, parse_list_time
from nsml_etl.pairs import Pair

CREDS = Credentials(ACCESS_KEY, SECRET_KEY)


def discover(sim, **kwargs):
    client = NsmlClient(Settings(base_url=sim.base_url), CREDS)
    try:
        return list(discover_runs(client, **kwargs))
    finally:
        client.close()


def list_requests(sim) -> int:
    return sum(n for path, n in sim.stats.by_path.items() if "/projects/runs?" in path)


def test_empty_account(make_simulator):
    sim = make_simulator(projects=0, runs_per_project=0)
    assert discover(sim) == [] and list_requests(sim) == 1


@pytest.mark.parametrize(("runs", "cap", "pages"), [(200, 100, 3), (23, 7, 5), (7, 7, 2)])
def test_paging_stops_only_on_an_empty_page(make_simulator, runs, cap, pages):
    # cap < our page size: every page is "short", and still not the end
    sim = make_simulator(projects=1, runs_per_project=runs, max_page_size=cap)
    found = discover(sim)
    assert sorted(r.pair for r in found) == sorted(Pair(*p) for p in sim.pairs())
    assert list_requests(sim) == pages


def test_a_run_created_between_pages_is_not_listed_twice_and_none_is_lost(make_simulator):
    sim = make_simulator(projects=1, runs_per_project=15, max_page_size=5)
    project = next(iter(sim.data))

    def create_run(page: int) -> None:
        if page == 1:  # newest first: everything shifts one place down
            sim.put_run(
                project,
                "16",
                {**sim.run(project, "15"), "runName": "16", "_createTime": "2099-01-01 00:00:00"},
            )
            sim.after_list_page = None

    sim.after_list_page = create_run
    found = [r.pair for r in discover(sim)]
    assert len(found) == len(set(found))
    originals = {Pair(project, str(n)) for n in range(1, 16)}
    assert originals <= set(found)


def test_list_times_are_read_in_the_configured_zone_and_stored_as_utc():
    from zoneinfo import ZoneInfo

    assert parse_list_time("2026-01-05 09:00:00", ZoneInfo("Asia/Seoul")) == datetime(
        2026, 1, 5, 0, 0, 0
    )
    assert parse_list_time("2026-01-05 09:00:00", ZoneInfo("UTC")) == datetime(2026, 1, 5, 9)
    assert parse_list_time("yesterday", ZoneInfo("UTC")) is None


def test_pairs_command_writes_a_usable_pairs_file(
    run_cli, credentials, make_simulator, tmp_path, sqlite_url
):
    sim = make_simulator(projects=3, runs_per_project=4)
    wanted = list(sim.data)[1]
    out = tmp_path / "listed.csv"
    result = run_cli("pairs", "--out", str(out), "--project", wanted, "--base-url", sim.base_url)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(
        p for p in sim.pairs() if p[0] == wanted
    )
    assert all(r["create_time"] and r["status"] for r in rows)
    exported = run_cli(
        "export", "--pairs", str(out), "--db", sqlite_url, "--base-url", sim.base_url
    )
    assert exported.exit_code == 0 and "exported 4," in exported.stdout


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_pairs_out_dash_writes_to_stdout(
    run_cli, credentials, simulator, tmp_path, monkeypatch, log_format
):
    """Regression: ``--out -`` ("- for stdout") wrote a file named ``-`` and nothing to stdout,
    once the file came to be written aside and renamed."""
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        "pairs", "--out", "-", "--base-url", simulator.base_url, "--log-format", log_format
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(simulator.pairs())
    assert list(tmp_path.iterdir()) == []
    if log_format == "text":
        assert result.stderr == f"Wrote {len(rows)} pairs to <stdout>.\n"
    else:
        written = [json.loads(line) for line in result.stderr.splitlines()][-1]
        assert (written["event"], written["path"]) == ("pairs_written", "<stdout>")


def test_export_all_stores_list_times_and_keeps_them(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=2, runs_per_project=6, max_page_size=4)
    result = run_cli(
        "export", "--all", "--db", db_url, "--base-url", sim.base_url, "--list-timezone", "UTC"
    )
    assert result.exit_code == 0, result.output
    rows = fetch_rows(
        db_url, "SELECT project_id, run_name, create_time, update_time FROM nsml_runs"
    )
    assert len(rows) == 12
    for row in rows:
        raw = sim.data[row["project_id"]]["runs"][row["run_name"]]
        assert str(row["create_time"])[:19] == raw["_createTime"]
        assert str(row["update_time"])[:19] == raw["_updateTime"]
    # an export from a pairs file (no list times) must not erase them
    pairs_file = tmp_path / "p.csv"
    pairs_file.write_text("project_id,run_name\n" + "\n".join(",".join(p) for p in sim.pairs()))
    assert (
        run_cli(
            "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
        ).exit_code
        == 0
    )
    again = fetch_rows(db_url, "SELECT project_id, run_name, create_time FROM nsml_runs")
    assert {(r["project_id"], r["run_name"], str(r["create_time"])) for r in again} == {
        (r["project_id"], r["run_name"], str(r["create_time"])) for r in rows
    }


def test_export_project_only_exports_that_project(run_cli, credentials, make_simulator, sqlite_url):
    sim = make_simulator(projects=3, runs_per_project=5)
    first, third = list(sim.data)[0], list(sim.data)[2]
    result = run_cli(
        "export",
        "--project",
        first,
        "--project",
        third,
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
    )
    assert result.exit_code == 0, result.output
    rows = fetch_rows(sqlite_url, "SELECT DISTINCT project_id FROM nsml_runs")
    assert {r["project_id"] for r in rows} == {first, third}


def test_skip_finished_fetches_only_unfinished_runs(
    run_cli, credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=2, runs_per_project=30)
    finished = {"RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_STOPPED"}
    assert run_cli("export", "--all", "--db", sqlite_url, "--base-url", sim.base_url).exit_code == 0
    unfinished = [p for p in sim.pairs() if sim.run(*p)["status"] not in finished]
    assert 0 < len(unfinished) < len(sim.pairs())
    before = sim.stats.requests
    result = run_cli(
        "export", "--all", "--skip-finished", "--db", sqlite_url, "--base-url", sim.base_url
    )
    assert result.exit_code == 0, result.output
    skipped = len(sim.pairs()) - len(unfinished)
    assert f"Skipped {skipped} runs already stored as finished." in result.stdout
    list_pages = -(-len(sim.pairs()) // 100) + 1  # full pages, then one empty page
    assert sim.stats.requests - before == len(unfinished) + list_pages
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith(f"Summary: exported {len(unfinished)}, failed 0")
    )


def test_export_needs_exactly_one_source(run_cli, credentials, simulator, tmp_path):
    for args in ([], ["--all", "--project", "x"], ["--pairs", "p.csv", "--all"]):
        result = run_cli("export", *args, "--base-url", simulator.base_url)
        assert result.exit_code == 2 and "exactly one" in result.stderr
    assert simulator.stats.requests == 0
