"""Exact periods in a time zone: days across a daylight saving change, calendar months, and a
zone that does not exist, on every database, through the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from conftest import fetch_rows

# q1/1 ran from 7 March 12:00 UTC to 10 March 12:00 UTC, across New York's change to summer
# time (8 March 2026, 02:00 local); q2/1 from 28 February 11:00 UTC to 1 March 11:00 UTC,
# across the end of February there (1 March 00:00 EST is 05:00 UTC).
E0, E1, E2 = "2026-02-28 12:00:00", "2026-03-07 13:00:00", "2026-03-10 18:00:00"


def kst(utc: str) -> str:
    """A UTC time as the run list writes it (Seoul time, no zone)."""
    return (datetime.fromisoformat(utc) + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")


def put(sim, project: str, status: str, created: str, updated: str) -> None:
    sim.put_run(
        project,
        "1",
        {
            "projectId": project,
            "runName": "1",
            "projectName": project.upper(),
            "status": status,
            "creator": "dana",
            "engFullName": "[GPU] A100 2EA",
            "gpuSvrCode": 207,
            "imageType": "BASE",
            "imagePath": "img",
            "envs": {},
            "_createTime": kst(created),
            "_updateTime": kst(updated),
        },
    )


def history(run_cli, make_simulator, monkeypatch, db_url: str) -> str:
    """Each run first seen running, an hour after it was created (so it started halfway, an
    hour before it was seen), and later seen finished with the list's end time."""
    sim = make_simulator(projects=0)

    def export(moment: str) -> None:
        monkeypatch.setenv("NSML_ETL_CLOCK", moment)
        result = run_cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
        assert result.exit_code == 0, result.output

    put(sim, "q2", "RUN_STATE_IN_PROGRESS", "2026-02-28 10:00:00", "2026-02-28 10:00:00")
    export(E0)
    put(sim, "q2", "RUN_STATE_COMPLETED", "2026-02-28 10:00:00", "2026-03-01 11:00:00")
    put(sim, "q1", "RUN_STATE_IN_PROGRESS", "2026-03-07 11:00:00", "2026-03-07 11:00:00")
    export(E1)
    put(sim, "q1", "RUN_STATE_COMPLETED", "2026-03-07 11:00:00", "2026-03-10 12:00:00")
    export(E2)
    monkeypatch.delenv("NSML_ETL_CLOCK")
    assert run_cli("gpu-servers", "set", "207", "2", "--db", db_url).exit_code == 0
    assert run_cli("views", "--db", db_url).exit_code == 0
    return db_url


def hours(run_cli, db_url: str, *args: str) -> list[tuple]:
    result = run_cli(
        "report", "--db", db_url, "--format", "json", "--view", "run_hours_by_project", *args
    )
    assert result.exit_code == 0, result.output
    return [tuple(r.values()) for r in json.loads(result.stdout)["run_hours_by_project"]["rows"]]


def test_days_across_a_daylight_saving_change_and_calendar_months(
    run_cli, credentials, make_simulator, monkeypatch, db_url
):
    db = history(run_cli, make_simulator, monkeypatch, db_url)
    spans = fetch_rows(db, "SELECT project_id, active_from, active_until FROM nsml_run_timeline")
    assert sorted((s["project_id"], str(s["active_from"])[:19]) for s in spans) == [
        ("q1", "2026-03-07 12:00:00"),
        ("q2", "2026-02-28 11:00:00"),
    ]
    zone = ("--timezone", "America/New_York")
    # 7 March from 07:00 local (17 h), 8 March has 23 hours, 9 March 24
    days = hours(
        run_cli, db, "--since", "2026-03-07", "--until", "2026-03-09", *zone, "--period", "day"
    )
    assert days == [
        ("2026-03-07", "2026-03-07", "q1", "Q1", 17.0, 34.0, 17.0),
        ("2026-03-08", "2026-03-08", "q1", "Q1", 23.0, 46.0, 23.0),
        ("2026-03-09", "2026-03-09", "q1", "Q1", 24.0, 48.0, 24.0),
    ]
    months = hours(
        run_cli, db, "--since", "2026-02-01", "--until", "2026-03-31", *zone, "--period", "month"
    )
    assert months == [
        ("2026-02-01", "2026-02-28", "q2", "Q2", 18.0, 36.0, 18.0),
        ("2026-03-01", "2026-03-31", "q1", "Q1", 72.0, 144.0, 72.0),
        ("2026-03-01", "2026-03-31", "q2", "Q2", 6.0, 12.0, 6.0),
    ]
    # weeks from Monday, cut to the period at both ends
    weeks = hours(
        run_cli, db, "--since", "2026-03-01", "--until", "2026-03-09", *zone, "--period", "week"
    )
    assert [(w[0], w[1], w[2], w[4]) for w in weeks] == [
        ("2026-03-01", "2026-03-01", "q2", 6.0),
        ("2026-03-02", "2026-03-08", "q1", 40.0),
        ("2026-03-09", "2026-03-09", "q1", 24.0),
    ]


def test_a_zone_that_does_not_exist_is_a_usage_error(run_cli, credentials, sqlite_url, monkeypatch):
    result = run_cli("report", "--db", sqlite_url, "--timezone", "Mars/Olympus_Mons")
    assert result.exit_code == 2
    assert "--timezone" in result.stderr and "IANA time zone" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setenv("NSML_ETL_TIMEZONE", "Nowhere")
    result = run_cli("report", "--db", sqlite_url)
    assert result.exit_code == 2 and "NSML_ETL_TIMEZONE" in result.stderr


def test_the_day_views_cut_spans_at_utc_days_and_at_the_views_zone(
    run_cli, credentials, make_simulator, monkeypatch, db_url
):
    db = history(run_cli, make_simulator, monkeypatch, db_url)
    result = run_cli("views", "--db", db, "--timezone", "America/New_York")
    assert result.exit_code == 0, result.output

    def days(view):
        sql = f"SELECT * FROM {view} WHERE project_id = 'q1'"  # noqa: S608 - our view names
        rows = fetch_rows(db, sql)
        return sorted(
            (str(r["day"])[:10], r["zone"], float(r["run_hours"]), float(r["gpu_hours"]))
            for r in rows
        )

    assert days("nsml_run_hours_per_day") == [
        ("2026-03-07", "UTC", 12.0, 24.0),
        ("2026-03-08", "UTC", 24.0, 48.0),
        ("2026-03-09", "UTC", 24.0, 48.0),
        ("2026-03-10", "UTC", 12.0, 24.0),
    ]
    ny = "America/New_York"
    assert days("nsml_run_hours_per_local_day") == [
        ("2026-03-07", ny, 17.0, 34.0),
        ("2026-03-08", ny, 23.0, 46.0),  # the day the clocks went forward
        ("2026-03-09", ny, 24.0, 48.0),
        ("2026-03-10", ny, 8.0, 16.0),
    ]
    # a calendar month in a BI tool: the sum of its days, as the README says
    (month,) = fetch_rows(
        db,
        "SELECT SUM(run_hours) AS h FROM nsml_run_hours_per_local_day "
        "WHERE day >= :first AND day < :next",
        {"first": "2026-02-01", "next": "2026-03-01"},
    )
    assert float(month["h"]) == 18.0  # q2's February in New York
    # a later refresh (report's, whatever its --timezone) keeps the views' zone
    assert run_cli("report", "--db", db, "--timezone", "UTC").exit_code == 0
    assert {r["zone"] for r in fetch_rows(db, "SELECT * FROM nsml_run_hours_per_local_day")} == {ny}
