"""Historical run analytics: the timeline estimates and the weekly views, on every database,
against answers computed by hand from a history built by real exports at simulated moments."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from conftest import fetch_rows

# Five exports a day apart, at noon UTC: Fri 9 Jan 2026 to Tue 13 Jan (weeks start on Monday,
# 5 and 12 January).
E1, E2, E3, E4, E5 = (f"2026-01-{day:02d} 12:00:00" for day in range(9, 14))
V100, A100, NOTEBOOK = "[GPU] V100 1EA", "[GPU] A100 2EA", "[Notebook] 4vCPU"


def kst(utc: str) -> str:
    """A UTC time as the run list writes it (Seoul time, no zone)."""
    return (datetime.fromisoformat(utc) + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")


def body(project, name, status, created, updated, image, code, engine, creator):
    return {
        "projectId": project,
        "runName": name,
        "projectName": project.upper(),
        "status": status,
        "creator": creator,
        "engFullName": engine,
        "gpuSvrCode": code,
        "imageType": "BASE",
        "imagePath": image,
        "envs": {},
        "_createTime": kst(created),
        "_updateTime": kst(updated),
    }


def ts(value):
    return None if value is None else str(value).replace("T", " ")[:19]


def num(value):
    return None if value is None else round(float(value), 3)


H = 3600.0


def test_estimates_and_weekly_views_on_every_database(
    run_cli, credentials, make_simulator, monkeypatch, db_url
):
    history = build_history(run_cli, make_simulator, monkeypatch, db_url)
    check_timeline(history)
    check_weekly_views(history)


def build_history(run_cli, make_simulator, monkeypatch, db_url):
    """Runs A (p1/1: spans two weeks), B (p1/2: never seen in progress), C (p2/1: deleted
    upstream while running), D (p2/2: still running, never seen waiting) and E (p1/3: canceled
    while waiting), exported at E1..E5."""
    sim = make_simulator(projects=0)

    def put(project, name, status, created, updated, image, code, engine, creator):
        sim.put_run(
            project,
            name,
            body(project, name, status, created, updated, image, code, engine, creator),
        )

    def export(at, expect=0):
        monkeypatch.setenv("NSML_ETL_CLOCK", at)
        result = run_cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
        assert result.exit_code == expect, result.output

    a = ("p1", "1", "img/a", 205, V100, "alice")
    put(*a[:2], "RUN_STATE_PENDING", "2026-01-09 10:00:00", "2026-01-09 10:00:00", *a[2:])
    put(
        "p2",
        "1",
        "RUN_STATE_IN_PROGRESS",
        "2026-01-09 06:00:00",
        "2026-01-09 07:00:00",
        "img/b",
        207,
        A100,
        "alice",
    )
    export(E1)
    put(*a[:2], "RUN_STATE_IN_PROGRESS", "2026-01-09 10:00:00", "2026-01-10 01:00:00", *a[2:])
    export(E2)
    put(
        "p1",
        "2",
        "RUN_STATE_FAILED",
        "2026-01-10 14:00:00",
        "2026-01-11 02:00:00",
        "img/a",
        205,
        V100,
        "bob",
    )
    sim.delete_run("p2", "1")
    export(E3, expect=1)  # the 404 of C is a failed pair
    put(*a[:2], "RUN_STATE_COMPLETED", "2026-01-09 10:00:00", "2026-01-12 06:00:00", *a[2:])
    e = ("p1", "3", "img/b", 101, NOTEBOOK, "bob")
    put(*e[:2], "RUN_STATE_PENDING", "2026-01-12 08:00:00", "2026-01-12 08:00:00", *e[2:])
    export(E4)
    put(*e[:2], "RUN_STATE_CANCELED", "2026-01-12 08:00:00", "2026-01-13 00:00:00", *e[2:])
    put(
        "p2",
        "2",
        "RUN_STATE_IN_PROGRESS",
        "2026-01-12 20:00:00",
        "2026-01-12 22:00:00",
        "img/b",
        207,
        A100,
        "carol",
    )
    export(E5)
    monkeypatch.delenv("NSML_ETL_CLOCK")
    for code, gpus in (("205", "1"), ("207", "2")):
        result = run_cli("gpu-servers", "set", code, gpus, "--db", db_url)
        assert result.exit_code == 0, result.output
    result = run_cli("views", "--db", db_url)
    assert result.exit_code == 0, result.output
    return db_url


def check_timeline(history):
    rows = {
        (r["project_id"], r["run_name"]): r
        for r in fetch_rows(history, "SELECT * FROM nsml_run_timeline")
    }
    assert set(rows) == {("p1", "1"), ("p1", "2"), ("p1", "3"), ("p2", "1"), ("p2", "2")}
    moments = (
        "created_at",
        "created_earliest",
        "created_latest",
        "started_at",
        "started_earliest",
        "started_latest",
        "ended_at",
        "ended_earliest",
        "ended_latest",
        "active_from",
        "active_until",
    )
    sources = ("created_source", "started_source", "ended_source")
    seconds = (
        "queue_wait_s",
        "queue_wait_min_s",
        "queue_wait_max_s",
        "run_time_s",
        "run_time_min_s",
        "run_time_max_s",
    )

    def got(key):
        row = rows[key]
        return (
            {m: ts(row[m]) for m in moments},
            {s: row[s] for s in sources},
            {s: num(row[s]) for s in seconds},
            (row["final_status"], row["finished"], ts(row["gone_at"]), ts(row["last_seen"])),
        )

    created_a = "2026-01-09 10:00:00"
    # A: seen waiting at E1, running from E2, finished by E4; the list's updateTime (Mon 06:00)
    # lies between the last sighting running (E3) and the first finished (E4), so it is the end.
    assert got(("p1", "1")) == (
        {
            "created_at": created_a,
            "created_earliest": created_a,
            "created_latest": created_a,
            "started_at": "2026-01-10 00:00:00",
            "started_earliest": E1,
            "started_latest": E2,
            "ended_at": "2026-01-12 06:00:00",
            "ended_earliest": "2026-01-12 06:00:00",
            "ended_latest": "2026-01-12 06:00:00",
            "active_from": "2026-01-10 00:00:00",
            "active_until": "2026-01-12 06:00:00",
        },
        {"created_source": "list", "started_source": "history", "ended_source": "list"},
        {
            "queue_wait_s": 14 * H,
            "queue_wait_min_s": 2 * H,
            "queue_wait_max_s": 26 * H,
            "run_time_s": 54 * H,
            "run_time_min_s": 42 * H,
            "run_time_max_s": 66 * H,
        },
        ("RUN_STATE_COMPLETED", 1, None, E5),
    )
    # B: created, run and failed between E2 and E3: never seen running, so its start is only
    # known to lie between its creation and its end (the list's updateTime).
    assert got(("p1", "2")) == (
        {
            "created_at": "2026-01-10 14:00:00",
            "created_earliest": "2026-01-10 14:00:00",
            "created_latest": "2026-01-10 14:00:00",
            "started_at": "2026-01-10 20:00:00",
            "started_earliest": "2026-01-10 14:00:00",
            "started_latest": "2026-01-11 02:00:00",
            "ended_at": "2026-01-11 02:00:00",
            "ended_earliest": "2026-01-11 02:00:00",
            "ended_latest": "2026-01-11 02:00:00",
            "active_from": "2026-01-10 20:00:00",
            "active_until": "2026-01-11 02:00:00",
        },
        {"created_source": "list", "started_source": "inferred", "ended_source": "list"},
        {
            "queue_wait_s": 6 * H,
            "queue_wait_min_s": 0.0,
            "queue_wait_max_s": 12 * H,
            "run_time_s": 6 * H,
            "run_time_min_s": 0.0,
            "run_time_max_s": 12 * H,
        },
        ("RUN_STATE_FAILED", 1, None, E5),
    )
    # C: running at its first sighting (E1), deleted upstream before E3: it ended between its
    # last fetch (E2) and the 404 (E3), and counts up to then.
    assert got(("p2", "1")) == (
        {
            "created_at": "2026-01-09 06:00:00",
            "created_earliest": "2026-01-09 06:00:00",
            "created_latest": "2026-01-09 06:00:00",
            "started_at": "2026-01-09 09:00:00",
            "started_earliest": "2026-01-09 06:00:00",
            "started_latest": E1,
            "ended_at": "2026-01-11 00:00:00",
            "ended_earliest": E2,
            "ended_latest": E3,
            "active_from": "2026-01-09 09:00:00",
            "active_until": "2026-01-11 00:00:00",
        },
        {"created_source": "list", "started_source": "history", "ended_source": "gone"},
        {
            "queue_wait_s": 3 * H,
            "queue_wait_min_s": 0.0,
            "queue_wait_max_s": 6 * H,
            "run_time_s": 39 * H,
            "run_time_min_s": 24 * H,
            "run_time_max_s": 54 * H,
        },
        ("RUN_STATE_IN_PROGRESS", 0, E3, E2),
    )
    # D: still running at the last export; counted to its last sighting.
    assert got(("p2", "2")) == (
        {
            "created_at": "2026-01-12 20:00:00",
            "created_earliest": "2026-01-12 20:00:00",
            "created_latest": "2026-01-12 20:00:00",
            "started_at": "2026-01-13 04:00:00",
            "started_earliest": "2026-01-12 20:00:00",
            "started_latest": E5,
            "ended_at": None,
            "ended_earliest": None,
            "ended_latest": None,
            "active_from": "2026-01-13 04:00:00",
            "active_until": E5,
        },
        {"created_source": "list", "started_source": "history", "ended_source": None},
        {
            "queue_wait_s": 8 * H,
            "queue_wait_min_s": 0.0,
            "queue_wait_max_s": 16 * H,
            "run_time_s": None,
            "run_time_min_s": None,
            "run_time_max_s": None,
        },
        ("RUN_STATE_IN_PROGRESS", 0, None, E5),
    )
    # E: canceled while waiting: it never started, and so neither waited nor ran.
    assert got(("p1", "3")) == (
        {
            "created_at": "2026-01-12 08:00:00",
            "created_earliest": "2026-01-12 08:00:00",
            "created_latest": "2026-01-12 08:00:00",
            "started_at": None,
            "started_earliest": None,
            "started_latest": None,
            "ended_at": "2026-01-13 00:00:00",
            "ended_earliest": "2026-01-13 00:00:00",
            "ended_latest": "2026-01-13 00:00:00",
            "active_from": None,
            "active_until": None,
        },
        {"created_source": "list", "started_source": None, "ended_source": "list"},
        {
            "queue_wait_s": None,
            "queue_wait_min_s": None,
            "queue_wait_max_s": None,
            "run_time_s": None,
            "run_time_min_s": None,
            "run_time_max_s": None,
        },
        ("RUN_STATE_CANCELED", 1, None, E5),
    )


def check_weekly_views(history):
    hours = fetch_rows(history, "SELECT * FROM nsml_run_hours_per_week")
    assert sorted(
        (
            str(r["week"])[:10],
            r["project_id"],
            r["eng_full_name"],
            r["gpu_svr_code"],
            int(r["active_runs"]),
            num(r["run_hours"]),
            None if r["gpus"] is None else int(r["gpus"]),
            num(r["gpu_hours"]),
        )
        for r in hours
    ) == [
        # A's 54 hours split 48 + 6 at the week boundary; B ran 6 hours, C 39 on 2 GPUs
        ("2026-01-05", "p1", V100, 205, 2, 54.0, 1, 54.0),
        ("2026-01-05", "p2", A100, 207, 1, 39.0, 2, 78.0),
        ("2026-01-12", "p1", V100, 205, 1, 6.0, 1, 6.0),
        ("2026-01-12", "p2", A100, 207, 1, 8.0, 2, 16.0),
    ]
    waits = fetch_rows(history, "SELECT * FROM nsml_queue_wait_per_week")
    assert sorted(
        (
            str(r["week"])[:10],
            r["project_id"] or "",
            int(r["runs"]),
            num(r["median_wait_s"]),
            num(r["p90_wait_s"]),
        )
        for r in waits
    ) == [
        ("2026-01-05", "", 2, 3 * H, 14 * H),  # all projects: nearest ranks 1 and 2 of 2
        ("2026-01-05", "p1", 1, 14 * H, 14 * H),  # B (never seen running) is left out
        ("2026-01-05", "p2", 1, 3 * H, 3 * H),
        ("2026-01-12", "", 1, 8 * H, 8 * H),
        ("2026-01-12", "p2", 1, 8 * H, 8 * H),
    ]
    rates = fetch_rows(history, "SELECT * FROM nsml_failure_rates_per_week")
    assert sorted(
        (
            r["dimension"],
            r["value"],
            str(r["week"])[:10],
            int(r["finished"]),
            int(r["failed"]),
            num(r["failure_rate"]),
        )
        for r in rates
    ) == [
        ("creator", "alice", "2026-01-12", 1, 0, 0.0),
        ("creator", "bob", "2026-01-05", 1, 1, 1.0),
        ("creator", "bob", "2026-01-12", 1, 0, 0.0),
        ("gpu_server", V100, "2026-01-05", 1, 1, 1.0),
        ("gpu_server", V100, "2026-01-12", 1, 0, 0.0),
        ("gpu_server", NOTEBOOK, "2026-01-12", 1, 0, 0.0),
        ("image", "img/a", "2026-01-05", 1, 1, 1.0),
        ("image", "img/a", "2026-01-12", 1, 0, 0.0),
        ("image", "img/b", "2026-01-12", 1, 0, 0.0),  # C, gone unfinished, is not finished
    ]
    missing = fetch_rows(history, "SELECT * FROM nsml_gpu_servers_without_count")
    assert [(r["gpu_svr_code"], r["eng_full_name"], int(r["runs"])) for r in missing] == [
        (101, NOTEBOOK, 1)
    ]
    # the deleted run is no longer active anywhere, and its status stops counting when gone
    assert [
        (r["project_id"], r["run_name"])
        for r in fetch_rows(history, "SELECT * FROM nsml_active_runs")
    ] == [("p2", "2")]
    (durations,) = fetch_rows(
        history,
        "SELECT seconds FROM nsml_status_durations WHERE project_id = 'p2' AND run_name = '1'",
    )
    assert num(durations["seconds"]) == 48 * H


def test_period_and_sums_of_the_report():
    from datetime import date

    from nsml_etl.errors import InputError
    from nsml_etl.reporting.analytics import (
        export_interval_hours,
        failure_rates,
        hours_per_project,
        period_for,
    )
    from nsml_etl.reporting.charts import axis_scale as _scale

    today = date(2026, 1, 14)  # a Wednesday
    period = period_for(None, None, today)
    assert (period.first_week, period.until) == (date(2025, 11, 24), today)  # 8 weeks
    assert period_for(date(2026, 1, 7), None, today).first_week == date(2026, 1, 5)
    with pytest.raises(InputError, match="after --until"):
        period_for(date(2026, 2, 1), date(2026, 1, 1), today)

    rows = [
        {
            "week": "2026-01-05",
            "project_id": "p",
            "project_name": "P",
            "active_runs": 2,
            "run_hours": 10.0,
            "gpu_hours": 20.0,
        },
        {
            "week": "2026-01-05",
            "project_id": "p",
            "project_name": "P",
            "active_runs": 1,
            "run_hours": 3.5,
            "gpu_hours": None,
        },  # a server without a GPU count
        {
            "week": "2025-12-29",
            "project_id": "p",
            "project_name": "P",
            "active_runs": 1,
            "run_hours": 99.0,
            "gpu_hours": 99.0,
        },  # before the period
    ]
    assert hours_per_project(rows, period_for(date(2026, 1, 5), None, today)).rows == [
        (date(2026, 1, 5), "p", "P", 3, 13.5, 20.0, 3.5)
    ]
    rates = [
        {"dimension": "image", "value": v, "week": "2026-01-05", "finished": f, "failed": x}
        for v, f, x in (("a", 10, 2), ("b", 1, 1), ("c", 4, 2))
    ]
    assert [r[0] for r in failure_rates(rates, period, "image").rows] == ["c", "a", "b"]
    assert export_interval_hours([datetime(2026, 1, 1, h) for h in (0, 6, 12, 13)]) == 6.0
    assert export_interval_hours([datetime(2026, 1, 1)]) is None
    assert [_scale(v, False)[1] for v in (149, 19.2, 0.3, 0)] == [150, 20, 0.3, 1]
