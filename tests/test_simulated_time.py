"""The simulator's clock: runs are created, wait, run and end as simulated time passes; exports
at successive simulated moments (NSML_ETL_CLOCK) build a history the report can use."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from conftest import fetch_rows

from nsml_etl.testing.dataset import generate_dataset, list_time
from nsml_etl.testing.simulator import Simulator

EPOCH = datetime(2026, 3, 2)  # a Monday


def states(sim: Simulator) -> dict[tuple[str, str], str | None]:
    """What Get run says of every run right now (None: 404)."""
    out = {}
    for project_id, run_name in sim.pairs():
        status, body = sim.route(f"/nsml/v1/projects/{project_id}/runs/{run_name}")
        out[(project_id, run_name)] = body["status"] if status == 200 else None
    return out


def listed(sim: Simulator) -> dict[tuple[str, str], dict]:
    _, page = sim.route("/nsml/v1/projects/runs?page=1&pageSize=100")
    return {(r["projectId"], r["runName"]): r for r in page["runList"]}


@pytest.fixture
def timeline_simulator(make_simulator):
    """A simulator whose clock starts at EPOCH (seed 4 has runs deleted and canceled)."""
    return lambda **overrides: make_simulator(
        seed=4, projects=2, runs_per_project=15, epoch=EPOCH, **overrides
    )


def test_runs_move_through_their_lives_as_the_clock_moves(timeline_simulator):
    sim = timeline_simulator()
    assert set(states(sim).values()) == {None}  # nothing created yet at the epoch
    assert listed(sim) == {}
    seen: dict[tuple[str, str], list[str]] = {}
    for _ in range(4 * 24 * 12):  # 12 days in steps of 15 minutes
        sim.advance(timedelta(minutes=15))
        for key, status in states(sim).items():
            if status is not None and seen.get(key, [None])[-1] != status:
                seen.setdefault(key, []).append(status)
    assert len(seen) > 20  # new runs appeared over time
    allowed = {"RUN_STATE_PENDING": 0, "RUN_STATE_IN_PROGRESS": 1}
    for history in seen.values():
        # never backwards: waiting, then running, then one terminal status at most
        order = [allowed.get(status, 2) for status in history]
        assert order == sorted(order) and order.count(2) <= 1
    finals = {h[-1] for h in seen.values()}
    assert {"RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_CANCELED"} <= finals
    assert any(h[:2] == ["RUN_STATE_PENDING", "RUN_STATE_IN_PROGRESS"] for h in seen.values())
    deleted = [key for key, status in states(sim).items() if status is None and key in seen]
    assert deleted  # some runs were deleted upstream: Get run answers 404, the list drops them
    assert not set(deleted) & set(listed(sim))


def test_the_run_list_follows_the_clock_in_seoul_time(timeline_simulator):
    sim = timeline_simulator()
    sim.set_clock(EPOCH + timedelta(days=3))
    for key, summary in listed(sim).items():
        life = sim.data[key[0]]["runs"][key[1]]["_timeline"]
        assert summary["createTime"] == list_time(life.created)
        status, updated = life.status_at(sim.clock)
        assert (summary["status"], summary["updateTime"]) == (status, list_time(updated))
    assert list_time(datetime(2026, 3, 2, 20, 0)) == "2026-03-03 05:00:00"  # UTC+9


def test_the_same_seed_and_epoch_give_the_same_timeline_and_frozen_data_stays(
    timeline_simulator, make_simulator, tmp_path
):
    first, second = timeline_simulator(), timeline_simulator()
    for sim in (first, second):
        sim.set_clock(EPOCH + timedelta(days=5))
    assert states(first) == states(second) and listed(first) == listed(second)
    frozen = make_simulator(seed=4, projects=2, runs_per_project=15)
    assert frozen.clock is None
    assert frozen.data == generate_dataset(4, 2, 15)  # no timeline unless asked for
    # a clock file moves the clock of a running simulator (the demo's way)
    clock_file = tmp_path / "clock.txt"
    clock_file.write_text("2026-03-04T00:00:00Z")
    sim = timeline_simulator(clock_file=clock_file)
    assert sim.clock == datetime(2026, 3, 4)
    clock_file.write_text("2026-03-06T12:00:00+09:00\n")
    assert sim.clock == datetime(2026, 3, 6, 3)


def test_exports_at_simulated_moments_build_a_history_for_the_report(
    run_cli, credentials, make_simulator, monkeypatch, sqlite_url, tmp_path
):
    sim = make_simulator(seed=5, projects=2, runs_per_project=6, epoch=EPOCH)
    moment = EPOCH
    for _ in range(12):  # three days, every 6 hours
        moment += timedelta(hours=6)
        sim.set_clock(moment)
        monkeypatch.setenv("NSML_ETL_CLOCK", moment.isoformat() + "Z")
        result = run_cli("export", "--all", "--db", sqlite_url, "--base-url", sim.base_url)
        assert result.exit_code in (0, 1), result.output  # 1: a run deleted upstream
    assert run_cli("views", "--db", sqlite_url).exit_code == 0
    check_estimates_hold_the_truth(sim, sqlite_url, interval_h=6)
    batches = fetch_rows(sqlite_url, "SELECT started_at FROM nsml_export_batches ORDER BY id")
    assert [str(b["started_at"])[:16] for b in batches][:2] == [
        "2026-03-02 06:00",
        "2026-03-02 12:00",
    ]  # the simulated moments, not the wall clock

    page = tmp_path / "report.html"
    report = run_cli(
        "report",
        "--db",
        sqlite_url,
        "--format",
        "json",
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-08",
        "--html",
        str(page),
    )
    assert report.exit_code == 0, report.output
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_status_transitions")[0]["n"]
    sections = json.loads(report.stdout)
    assert sections["analytics_period"]["rows"] == [
        {
            "since": "2026-03-01",  # the day asked for, not its week's Monday
            "until": "2026-03-08",
            "export_interval_h": 6.0,
            "estimates": "good to about one export interval",
            "timezone": "Asia/Seoul",
            "period": "whole",
        }
    ]
    hours = sections["run_hours_per_project"]["rows"]
    assert hours and all(row["week"] == "2026-03-02" for row in hours)
    # The seeded simulator's week of 2026-03-02 as the export saw it (its clock is fixed):
    # every span of the timeline lies inside the period, and is counted to the millisecond.
    spans = fetch_rows(sqlite_url, "SELECT active_from, active_until FROM nsml_run_timeline")
    counted = sum(
        (datetime.fromisoformat(s["active_until"]) - datetime.fromisoformat(s["active_from"]))
        / timedelta(hours=1)
        for s in spans
        if s["active_from"] and s["active_until"]
    )
    assert sum(row["run_hours"] for row in hours) == pytest.approx(counted, abs=0.01)
    assert sum(row["run_hours"] for row in hours) == pytest.approx(90.16)
    assert all(row["gpu_hours"] == 0 for row in hours)  # no GPU counts known yet
    assert sections["queue_wait_per_week"]["rows"][0]["project_name"] == "(all projects)"
    assert sections["failure_rate_by_image"]["rows"]
    without_count = {r["gpu_svr_code"] for r in sections["nsml_gpu_servers_without_count"]["rows"]}
    assert without_count == {101, 205, 207}  # every server the runs used: none has a count
    html = page.read_text(encoding="utf-8")
    for chart in (
        "Run-hours per project per week",
        "Queue wait per week (all projects)",
        "Failure rate by image (failed / finished)",
    ):
        section = html.split(f"<h2>{chart}</h2>")[1].split("</section>")[0]
        assert "<svg" in section and "<rect" in section, chart
    assert "No GPU counts are known" in html
    # a period before any run: the sections are there, and empty
    empty = json.loads(
        run_cli("report", "--db", sqlite_url, "--format", "json", "--until", "2026-02-20").stdout
    )
    assert empty["run_hours_per_project"]["rows"] == []


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01"])
def test_a_bad_simulated_clock_stops_before_anything(
    run_cli, credentials, monkeypatch, sqlite_url, tmp_path, value
):
    monkeypatch.setenv("NSML_ETL_CLOCK", value)
    result = run_cli("export", "--all", "--db", sqlite_url, "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "NSML_ETL_CLOCK" in result.stderr and "ISO 8601" in result.stderr
    assert not (tmp_path / "runs.db").exists()


def check_estimates_hold_the_truth(sim, db_url, interval_h):
    """Every bound of nsml_run_timeline holds the simulator's own times, and every estimate
    seen in the history is off by at most half an export interval."""
    rows = fetch_rows(db_url, "SELECT * FROM nsml_run_timeline")
    assert rows
    checked = 0

    def moment(value):
        return None if value is None else datetime.fromisoformat(str(value))

    for row in rows:
        life = sim.data[row["project_id"]]["runs"][row["run_name"]]["_timeline"]
        truth = {
            "created": life.created,
            "started": life.started,
            "ended": life.deleted or life.ended,
        }
        for name, true in truth.items():
            earliest, latest = moment(row[f"{name}_earliest"]), moment(row[f"{name}_latest"])
            if latest is None:
                continue  # not started or not ended yet (as far as the exports know)
            assert true is not None, (row, name)
            assert earliest is None or earliest <= true, (row, name)
            assert true <= latest, (row, name)
            if row[f"{name}_source"] in ("history", "gone") and earliest is not None:
                error = abs((moment(row[f"{name}_at"]) - true).total_seconds()) / 3600
                assert error <= interval_h / 2, (row, name)
                checked += 1
    assert checked >= 5
