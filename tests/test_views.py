"""Reporting views on every database, the report command, and the HTML page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from conftest import fetch_rows

from nsml_etl.reporting.views import check_macros, expand, load_views
from nsml_etl.warehouse.families import family_of


def load(run_cli, db_url, tmp_path, bodies):
    path = tmp_path / f"runs{len(list(tmp_path.glob('runs*.jsonl')))}.jsonl"
    path.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies))
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 0, result.output


RUNS = [
    {
        "projectId": "p1",
        "runName": "1",
        "projectName": "비전",
        "status": "RUN_STATE_COMPLETED",
        "creator": "alice",
        "engFullName": "A100",
        "gpuSvrCode": 207,
        "imageType": "BASE",
        "imagePath": "img/a",
        "envs": {"LR": "0.1", "lr": "x"},
    },
    {
        "projectId": "p1",
        "runName": "2",
        "projectName": "비전",
        "status": "RUN_STATE_IN_PROGRESS",
        "creator": "alice",
        "engFullName": "A100",
        "gpuSvrCode": 207,
        "imageType": "CUSTOM",
        "imagePath": "img/b",
        "envs": {"LR": "0.2"},
    },
    {
        "projectId": "p2",
        "runName": "1",
        "projectName": "llm",
        "status": "RUN_STATE_PENDING",
        "creator": "bob",
        "engFullName": "V100",
        "gpuSvrCode": 205,
        "imageType": "BASE",
        "imagePath": "img/a",
        "envs": {},
    },
]


def test_every_view_answers_on_every_database(run_cli, db_url, tmp_path, monkeypatch):
    # The loads are dated by the exporter's clock, two hours and one hour ago, so that the
    # status durations are known to the second.
    first = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=2)
    monkeypatch.setenv("NSML_ETL_CLOCK", first.isoformat())
    load(run_cli, db_url, tmp_path, RUNS)
    result = run_cli("views", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "Created 19 views." in result.stderr

    by_status = fetch_rows(
        db_url,
        "SELECT project_id, status, runs FROM "
        "nsml_runs_by_project_status ORDER BY project_id, status",
    )
    assert [(r["project_id"], r["status"], r["runs"]) for r in by_status] == [
        ("p1", "RUN_STATE_COMPLETED", 1),
        ("p1", "RUN_STATE_IN_PROGRESS", 1),
        ("p2", "RUN_STATE_PENDING", 1),
    ]
    active = fetch_rows(
        db_url, "SELECT project_id, run_name FROM nsml_active_runs ORDER BY project_id"
    )
    assert [(r["project_id"], r["run_name"]) for r in active] == [("p1", "2"), ("p2", "1")]
    gpu = {
        r["eng_full_name"]: (r["runs"], r["active_runs"])
        for r in fetch_rows(db_url, "SELECT * FROM nsml_gpu_usage")
    }
    assert {k: (int(a), int(b)) for k, (a, b) in gpu.items()} == {"A100": (2, 1), "V100": (1, 1)}
    images = {
        (r["image_type"], r["image_path"]): r["runs"]
        for r in fetch_rows(db_url, "SELECT * FROM nsml_image_usage")
    }
    assert images == {("BASE", "img/a"): 2, ("CUSTOM", "img/b"): 1}
    creators = {
        r["creator"]: (r["runs"], r["projects"])
        for r in fetch_rows(db_url, "SELECT * FROM nsml_creator_activity")
    }
    assert creators == {"alice": (2, 1), "bob": (1, 1)}
    long_format = {
        (r["project_id"], r["run_name"], r["env_key"]): r["value"]
        for r in fetch_rows(db_url, "SELECT * FROM nsml_run_envs")
    }
    assert long_format == {
        ("p1", "1", "LR"): "0.1",
        ("p1", "1", "lr"): "x",
        ("p1", "2", "LR"): "0.2",
    }
    catalog = {
        r["env_key"]: (r["runs"], r["distinct_values"])
        for r in fetch_rows(db_url, "SELECT * FROM nsml_env_key_catalog")
    }
    assert catalog == {"LR": (2, 2), "lr": (1, 1)}  # case twins stay two keys
    _set_create_times(
        db_url,
        {
            ("p1", "1"): "2026-01-05 10:00:00",  # a Monday
            ("p1", "2"): "2026-01-11 23:00:00",  # the Sunday after
            ("p2", "1"): "2026-01-12 01:00:00",
        },
    )  # the next Monday
    weeks = fetch_rows(
        db_url, "SELECT week, status, runs FROM nsml_runs_per_week ORDER BY week, status"
    )
    assert [(str(w["week"])[:10], w["status"], w["runs"]) for w in weeks] == [
        ("2026-01-05", "RUN_STATE_COMPLETED", 1),
        ("2026-01-05", "RUN_STATE_IN_PROGRESS", 1),
        ("2026-01-12", "RUN_STATE_PENDING", 1),
    ]
    (fresh,) = fetch_rows(db_url, "SELECT * FROM nsml_export_freshness")
    assert fresh["last_successful_export"] is not None and fresh["runs"] == 3
    assert fresh["not_refreshed_1d"] == 0

    # history: p2/1 goes from PENDING to FAILED in a second load, an hour after the first
    monkeypatch.setenv("NSML_ETL_CLOCK", (first + timedelta(hours=1)).isoformat())
    load(run_cli, db_url, tmp_path, [{**RUNS[2], "status": "RUN_STATE_FAILED"}])
    transitions = fetch_rows(db_url, "SELECT * FROM nsml_status_transitions")
    assert [
        (t["project_id"], t["run_name"], t["previous_status"], t["status"]) for t in transitions
    ] == [("p2", "1", "RUN_STATE_PENDING", "RUN_STATE_FAILED")]
    durations = fetch_rows(
        db_url,
        "SELECT status, seconds FROM nsml_status_durations WHERE project_id = 'p2' ORDER BY status",
    )
    failed, pending = durations
    assert (failed["status"], pending["status"]) == ("RUN_STATE_FAILED", "RUN_STATE_PENDING")
    assert float(pending["seconds"]) == pytest.approx(3600, abs=0.01)  # one load to the next
    # The current version counts up to the database's now: about an hour so far (a view that
    # lost it would clamp it to 0).
    assert float(failed["seconds"]) > 3500

    # schema evolution: a new env key adds a column; the views keep working unchanged
    load(run_cli, db_url, tmp_path, [{**RUNS[0], "envs": {"BRAND_NEW": "1"}}])
    assert len(fetch_rows(db_url, "SELECT * FROM nsml_active_runs")) == 1
    catalog = {r["env_key"] for r in fetch_rows(db_url, "SELECT * FROM nsml_env_key_catalog")}
    assert "BRAND_NEW" in catalog


def _set_create_times(db_url, times):
    from datetime import datetime

    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    table = sa.table(
        "nsml_runs",
        sa.column("project_id"),
        sa.column("run_name"),
        sa.column("create_time", sa.DateTime()),
    )
    with engine.begin() as conn:
        for (project_id, run_name), text in times.items():
            conn.execute(
                sa.update(table)
                .where(table.c.project_id == project_id, table.c.run_name == run_name)
                .values(create_time=datetime.fromisoformat(text))
            )
    engine.dispose()


def test_report_formats(run_cli, sqlite_url, tmp_path):
    load(run_cli, sqlite_url, tmp_path, RUNS)
    text = run_cli("report", "--db", sqlite_url)
    assert text.exit_code == 0, text.output
    assert "== Active runs" in text.stdout and "alice" in text.stdout
    # Issue 15: JSON is keyed by view name, each section with its rows (it was keyed by title)
    as_json = json.loads(run_cli("report", "--db", sqlite_url, "--format", "json").stdout)
    assert {r["creator"] for r in as_json["nsml_creator_activity"]["rows"]} == {"alice", "bob"}
    # Issue 15: --format csv prints one section (it pasted every section into one stream)
    as_csv = run_cli(
        "report", "--db", sqlite_url, "--format", "csv", "--view", "nsml_creator_activity"
    ).stdout
    assert as_csv.startswith("creator,runs,projects,active_runs,last_created\n")
    # the analytics sections are there, empty without a history of exports
    for name, title in (
        ("analytics_period", "Analytics period"),
        ("run_hours_per_project", "Run-hours and GPU-hours per project and week"),
        ("queue_wait_per_week", "Queue wait per week"),
        ("failure_rate_by_image", "Failure rate by image"),
        ("nsml_gpu_servers_without_count", "GPU servers without a GPU count"),
    ):
        assert as_json[name]["title"] == title and f"== {title} ({name})" in text.stdout
    assert as_json["queue_wait_per_week"]["rows"] == []
    assert [r["gpu_svr_code"] for r in as_json["nsml_gpu_servers_without_count"]["rows"]] == [
        207,
        205,
    ]
    hours = run_cli(
        "report", "--db", sqlite_url, "--format", "csv", "--view", "run_hours_per_project"
    ).stdout
    assert hours.startswith("week,project_id,project_name,active_runs,run_hours,gpu_hours")
    bad = run_cli("report", "--db", sqlite_url, "--since", "2026-03-01", "--until", "2026-02-01")
    assert bad.exit_code == 2 and "--since 2026-03-01 is after --until" in bad.stderr
    assert run_cli("report", "--db", sqlite_url, "--since", "March").exit_code == 2


def test_html_report_is_self_contained_and_renders(run_cli, sqlite_url, tmp_path):
    load(run_cli, sqlite_url, tmp_path, RUNS)
    page = tmp_path / "report.html"
    result = run_cli("report", "--db", sqlite_url, "--html", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text and "Env keys in use" in text
    for remote in ("http://", "https://", "@import", "<script src", "<link"):
        assert remote not in text  # no CDN, no web fonts: works offline
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("NSML_ETL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (NSML_ETL_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium on this machine (CI installs it)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--dump-dom",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page
    assert "Busiest creators" in dom and dom.count("<rect") >= 4


def test_macros_expand_per_dialect():
    sql = "SELECT {{seconds_between(a, COALESCE(b, {{now}}))}} FROM {{runs}}"
    names = {"runs": '"nsml_runs"'}
    # whole milliseconds, in integers (the julian day's milliseconds, not its float difference)
    assert expand(sql, "sqlite", names) == (
        "SELECT ((CAST(ROUND((julianday(COALESCE(b, strftime('%Y-%m-%d %H:%M:%f', 'now')))"
        " - 2440587.5) * 86400000.0) AS INTEGER) - CAST(ROUND((julianday(a) - 2440587.5)"
        ' * 86400000.0) AS INTEGER)) / 1000.0) FROM "nsml_runs"'
    )
    assert "EXTRACT(EPOCH FROM" in expand(sql, "postgresql", names)
    assert "TIMESTAMPDIFF(MICROSECOND" in expand(sql, "mariadb", names)
    assert "strftime('%Y-%m-%d %H:%M:%f', 'now')" in expand("{{now}}", "sqlite", {})
    with pytest.raises(ValueError, match="unknown or malformed macro"):
        expand("{{nope(1)}}", "sqlite", {})


@pytest.mark.parametrize(
    ("template", "line", "problem"),
    [
        ("SELECT 1\nFROM {{nope}}", 2, "no macro is named 'nope'"),
        ("SELECT {{nope(1)}}", 1, "no macro is named 'nope'"),
        ("SELECT\n\n  {{days_ago(1, 2)}}", 3, "days_ago takes 1 arguments, got 2"),
        ("SELECT\n{{later(a, 'x, y')}}", 2, "a quote in an argument; write literals outside"),
        ("SELECT {{later(a, b}} FROM t", 1, "expected ')}}' to close it"),
        ("SELECT 1\n\n\n{{ runs }}", 4, "expected a name, then '}}' or '('"),
    ],
)
def test_a_bad_macro_says_its_file_and_line(template, line, problem):
    # Regression: {{nope}} (no parenthesis) failed with "substring not found", naming no file.
    with pytest.raises(ValueError) as caught:
        check_macros(template, "nsml_x.sql", family_of("sqlite").view_macros, ["runs"])
    message = str(caught.value)
    assert message.startswith(f"nsml_x.sql:{line}: unknown or malformed macro "), message
    assert message.endswith(problem), message
    with pytest.raises(ValueError, match=rf"^the template:{line}: unknown or malformed macro"):
        expand(template, "sqlite", {"runs": '"nsml_runs"'})


def test_every_shipped_view_passes_the_macro_check():
    for dialect in ("sqlite", "postgresql", "mysql"):
        assert len(load_views(dialect, "nsml_runs", lambda name: f'"{name}"', "utf8mb4_bin")) > 5
