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


def build_history(run_cli, make_simulator, monkeypatch, db_url, at=(E1, E2, E3, E4, E5)):
    """Runs A (p1/1: spans two weeks), B (p1/2: never seen in progress), C (p2/1: deleted
    upstream while running), D (p2/2: still running, never seen waiting) and E (p1/3: canceled
    while waiting), exported at E1..E5 (or the five moments ``at``)."""
    sim = make_simulator(projects=0)

    def put(project, name, status, created, updated, image, code, engine, creator):
        sim.put_run(
            project,
            name,
            body(project, name, status, created, updated, image, code, engine, creator),
        )

    def export(moment, expect=0):
        monkeypatch.setenv("NSML_ETL_CLOCK", moment)
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
    export(at[0])
    put(*a[:2], "RUN_STATE_IN_PROGRESS", "2026-01-09 10:00:00", "2026-01-10 01:00:00", *a[2:])
    export(at[1])
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
    export(at[2], expect=1)  # the 404 of C is a failed pair
    put(*a[:2], "RUN_STATE_COMPLETED", "2026-01-09 10:00:00", "2026-01-12 06:00:00", *a[2:])
    e = ("p1", "3", "img/b", 101, NOTEBOOK, "bob")
    put(*e[:2], "RUN_STATE_PENDING", "2026-01-12 08:00:00", "2026-01-12 08:00:00", *e[2:])
    export(at[3])
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
    export(at[4])
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
            r["scope"],
            r["project_id"] or "",
            int(r["runs"]),
            num(r["median_wait_s"]),
            num(r["p90_wait_s"]),
        )
        for r in waits
    ) == [
        # all projects: nearest ranks 1 and 2 of 2
        ("2026-01-05", "all projects", "", 2, 3 * H, 14 * H),
        ("2026-01-05", "project", "p1", 1, 14 * H, 14 * H),  # B (never seen running) left out
        ("2026-01-05", "project", "p2", 1, 3 * H, 3 * H),
        ("2026-01-12", "all projects", "", 1, 8 * H, 8 * H),
        ("2026-01-12", "project", "p2", 1, 8 * H, 8 * H),
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
    from nsml_etl.reporting.periods import Span

    today = date(2026, 1, 14)  # a Wednesday
    period = period_for(None, None, today)
    assert (period.since, period.until) == (date(2025, 11, 24), today)  # 8 weeks
    # the day asked for, not its week's Monday (the weekly views' weeks that overlap it count)
    assert period_for(date(2026, 1, 7), None, today).since == date(2026, 1, 7)
    assert period_for(date(2026, 1, 7), None, today).covers(date(2026, 1, 5))
    with pytest.raises(InputError, match="after --until"):
        period_for(date(2026, 2, 1), date(2026, 1, 1), today)

    def span(start, end, code):
        row = {"project_id": "p", "project_name": "P", "gpu_svr_code": code, "nodes": 1}
        return Span(datetime.fromisoformat(start), datetime.fromisoformat(end), row)

    timeline = [
        span("2026-01-05 00:00", "2026-01-05 05:00", 207),  # 5 h on 2 GPUs
        span("2026-01-06 00:00", "2026-01-06 03:30", 101),  # a server without a GPU count
        span("2026-01-04 00:00", "2026-01-05 05:00", 207),  # 5 of its 29 h in the period
    ]
    assert hours_per_project(
        timeline, {207: 2}, period_for(date(2026, 1, 5), None, today)
    ).rows == [(date(2026, 1, 5), "p", "P", 3, 13.5, 20.0, 3.5)]
    rates = [
        {"dimension": "image", "value": v, "week": "2026-01-05", "finished": f, "failed": x}
        for v, f, x in (("a", 10, 2), ("b", 1, 1), ("c", 4, 2))
    ]
    assert [r[0] for r in failure_rates(rates, period, "image").rows] == ["c", "a", "b"]
    assert export_interval_hours([datetime(2026, 1, 1, h) for h in (0, 6, 12, 13)]) == 6.0
    assert export_interval_hours([datetime(2026, 1, 1)]) is None
    assert [_scale(v, False)[1] for v in (149, 19.2, 0.3, 0)] == [150, 20, 0.3, 1]


def report_json(run_cli, db_url, *args):
    import json

    result = run_cli("report", "--db", db_url, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_hours_are_the_spans_clipped_to_the_days_of_a_zone(
    run_cli, credentials, make_simulator, monkeypatch, db_url
):
    """Two days in Seoul, 10 and 11 January: [9 Jan 15:00, 11 Jan 15:00) UTC, which cuts A
    (10 Jan 00:00 to 12 Jan 06:00 UTC) and C (9 Jan 09:00 to 11 Jan 00:00) in the middle; B
    (10 Jan 20:00 to 11 Jan 02:00) lies inside, D after it."""
    history = build_history(run_cli, make_simulator, monkeypatch, db_url)
    period = ("--since", "2026-01-10", "--until", "2026-01-11", "--timezone", "Asia/Seoul")
    sections = report_json(run_cli, history, *period)
    assert sections["analytics_period"]["rows"][0] | {"export_interval_h": None} == {
        "since": "2026-01-10",
        "until": "2026-01-11",
        "export_interval_h": None,
        "estimates": "good to about one export interval",
        "timezone": "Asia/Seoul",
        "period": "whole",
    }
    whole = ("2026-01-10", "2026-01-11")
    # A 39 h (to 11 Jan 15:00) + B 6 h on 1 GPU; C 33 h (from 9 Jan 15:00) on 2 GPUs
    assert [tuple(r.values()) for r in sections["run_hours_by_project"]["rows"]] == [
        (*whole, "p1", "P1", 45.0, 45.0, 45.0),
        (*whole, "p2", "P2", 33.0, 66.0, 33.0),
    ]
    assert [tuple(r.values()) for r in sections["run_hours_by_creator"]["rows"]] == [
        (*whole, "alice", 72.0, 105.0, 72.0),
        (*whole, "bob", 6.0, 6.0, 6.0),
    ]
    by_day = report_json(run_cli, history, *period, "--period", "day")["run_hours_by_project"]
    assert [tuple(r.values()) for r in by_day["rows"]] == [
        ("2026-01-10", "2026-01-10", "p2", "P2", 24.0, 48.0, 24.0),
        ("2026-01-10", "2026-01-10", "p1", "P1", 15.0, 15.0, 15.0),
        ("2026-01-11", "2026-01-11", "p1", "P1", 30.0, 30.0, 30.0),
        ("2026-01-11", "2026-01-11", "p2", "P2", 9.0, 18.0, 9.0),
    ]
    # the same days in UTC are other hours: A 48 h from 10 Jan 00:00, C 24 h to 11 Jan 00:00
    utc = report_json(run_cli, history, *period[:4], "--timezone", "UTC")
    assert [(r["project_id"], r["run_hours"]) for r in utc["run_hours_by_project"]["rows"]] == [
        ("p1", 54.0),
        ("p2", 24.0),
    ]


# The same five exports a fraction of a second after noon, with fractions that test how each
# database rounds: a half millisecond (rounded up), just under one, just under a second.
FRACTIONS = (".250500", ".777777", ".000499", ".500000", ".999999")


def ms(moment: str) -> int:
    """A time as whole milliseconds since 1970, rounded half up from its microseconds (the
    views' rule on every database)."""
    from datetime import UTC

    micros = int(datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp() * 10**6)
    return (micros + 500) // 1000


def mean_s(*milliseconds: int) -> float:
    """The mean of two durations in whole milliseconds, in seconds to the millisecond, a half
    rounded up (the views' ROUND on every database)."""
    from decimal import ROUND_HALF_UP, Decimal

    mean = Decimal(sum(milliseconds)) / 2000
    return float(mean.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def test_the_same_history_gives_the_same_figures_on_every_database(
    run_cli, credentials, make_simulator, monkeypatch, db_url
):
    """Regression: the views kept each database's own time precision (SQLite milliseconds in
    floating-point julian days, PostgreSQL and MariaDB microseconds; MariaDB's now in whole
    seconds), so midpoints, waits and hours of one history came out a little apart."""
    at = tuple(e + f for e, f in zip((E1, E2, E3, E4, E5), FRACTIONS, strict=True))
    history = build_history(run_cli, make_simulator, monkeypatch, db_url, at)
    rows = {
        (r["project_id"], r["run_name"]): r
        for r in fetch_rows(history, "SELECT * FROM nsml_run_timeline")
    }

    def moment(key, column):
        value = rows[key][column]
        return ms(str(value)) if value is not None else None

    created_a, created_c = ms("2026-01-09 10:00:00"), ms("2026-01-09 06:00:00")
    e = [ms(m) for m in at]
    started_a = e[0] + (e[1] - e[0]) // 2  # between E1 (waiting) and E2 (running)
    started_c = created_c + (e[0] - created_c) // 2
    ended_c = e[1] + (e[2] - e[1]) // 2  # between its last fetch and the 404
    assert (moment(("p1", "1"), "started_at"), moment(("p1", "1"), "active_from")) == (
        started_a,
        started_a,
    )
    assert (moment(("p2", "1"), "active_from"), moment(("p2", "1"), "active_until")) == (
        started_c,
        ended_c,
    )
    assert moment(("p2", "2"), "active_until") == e[4]  # its last sighting, as stored
    seconds = {
        key: (float(rows[key]["queue_wait_s"]), float(rows[key]["run_time_s"]))
        for key in (("p1", "1"), ("p2", "1"))
    }
    assert seconds == {
        ("p1", "1"): (
            mean_s(e[0] - created_a, e[1] - created_a),
            mean_s(ms("2026-01-12 06:00:00") - e[0], ms("2026-01-12 06:00:00") - e[1]),
        ),
        ("p2", "1"): (mean_s(0, e[0] - created_c), mean_s(e[1] - created_c, e[2] - e[0])),
    }
    waits = fetch_rows(history, "SELECT * FROM nsml_queue_wait_per_week WHERE project_id IS NULL")
    assert sorted((str(w["week"])[:10], float(w["median_wait_s"])) for w in waits) == [
        ("2026-01-05", seconds[("p2", "1")][0]),
        ("2026-01-12", mean_s(0, e[4] - ms("2026-01-12 20:00:00"))),
    ]
    hours = fetch_rows(history, "SELECT * FROM nsml_run_hours_per_week")
    assert sorted((str(h["week"])[:10], h["project_id"], float(h["run_hours"])) for h in hours) == [
        ("2026-01-05", "p1", round((ms("2026-01-12 00:00:00") - started_a) / 3.6e6 + 6, 2)),
        ("2026-01-05", "p2", round((ended_c - started_c) / 3.6e6, 2)),
        ("2026-01-12", "p1", 6.0),
        ("2026-01-12", "p2", round((e[4] - ms("2026-01-13 04:00:00") - 0) / 3.6e6, 2)),
    ]
    sections = report_json(run_cli, history, "--since", "2026-01-05", "--until", "2026-01-18")
    by_project = {r["project_id"]: r["run_hours"] for r in sections["run_hours_by_project"]["rows"]}
    assert by_project == {
        "p1": round((ms("2026-01-12 06:00:00") - started_a) / 3.6e6 + 6, 2),
        "p2": round((ended_c - started_c + e[4] - moment(("p2", "2"), "active_from")) / 3.6e6, 2),
    }
