"""The report agrees with itself and with the data (issue 22, item 4): runs deleted upstream
are shown as gone, never in progress; status names are data, never column names; CSV has every
row; the HTML page has an active-runs table, project colours apart from the statuses', axes
that end near the data, statuses in words and project names in the status changes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from html import unescape

import pytest
from conftest import fetch_rows
from test_report import KOREAN, NOW, _body, _chromium, build_team, report

DAY = timedelta(days=1)


def _gone_team(run_cli, make_simulator, monkeypatch, db_url):
    """kq1/1 runs, then is deleted upstream while still in progress (the next export --all
    asks after it, gets 404 and marks it gone); kq1/2 completes; lp2/1 keeps running."""
    sim = make_simulator(projects=0)

    def export(at, expect=0):
        monkeypatch.setenv("NSML_ETL_CLOCK", at.isoformat() + "Z")
        result = run_cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
        assert result.exit_code == expect, result.output

    sim.put_run("kq1", "1", _body("kq1", "1", "RUN_STATE_IN_PROGRESS", NOW - 3 * DAY))
    sim.put_run("kq1", "2", _body("kq1", "2", "RUN_STATE_COMPLETED", NOW - 3 * DAY))
    sim.put_run("lp2", "1", _body("lp2", "1", "RUN_STATE_IN_PROGRESS", NOW - 3 * DAY))
    export(NOW - 2 * DAY)
    sim.delete_run("kq1", "1")
    export(NOW - DAY, expect=1)  # the 404 is a failed pair; the run is marked gone
    monkeypatch.setenv("NSML_ETL_CLOCK", NOW.isoformat() + "Z")


def test_a_run_deleted_upstream_is_gone_never_in_progress(
    run_cli, make_simulator, monkeypatch, db_url, credentials, tmp_path
):
    _gone_team(run_cli, make_simulator, monkeypatch, db_url)
    assert fetch_rows(db_url, "SELECT run_name FROM nsml_runs WHERE gone_at IS NOT NULL") == [
        {"run_name": "1"}
    ]
    sections = json.loads(report(run_cli, db_url, "--format", "json").stdout)
    assert sections["headline"]["rows"][0]["active_runs"] == 1
    assert sections["runs_by_project"]["columns"] == [
        "project_name",
        "project_id",
        "runs",
        "in_progress",
        "completed",
        "gone",
    ]
    assert sections["runs_by_project"]["rows"] == [
        {
            "project_name": KOREAN,
            "project_id": "kq1",
            "runs": 2,
            "in_progress": 0,
            "completed": 1,
            "gone": 1,
        },
        {
            "project_name": "llm-pretrain",
            "project_id": "lp2",
            "runs": 1,
            "in_progress": 1,
            "completed": 0,
            "gone": 0,
        },
    ]
    # the view says the last status seen and that the run is gone
    assert sorted(
        (r["project_id"], r["status"], r["gone"], r["runs"])
        for r in sections["nsml_runs_by_project_status"]["rows"]
    ) == [
        ("kq1", "RUN_STATE_COMPLETED", 0, 1),
        ("kq1", "RUN_STATE_IN_PROGRESS", 1, 1),
        ("lp2", "RUN_STATE_IN_PROGRESS", 0, 1),
    ]
    assert sections["nsml_runs_per_week"]["rows"] == [
        {"week": "2026-01-12", "status": "RUN_STATE_COMPLETED", "gone": 0, "runs": 1},
        {"week": "2026-01-12", "status": "RUN_STATE_IN_PROGRESS", "gone": 0, "runs": 1},
        {"week": "2026-01-12", "status": "RUN_STATE_IN_PROGRESS", "gone": 1, "runs": 1},
    ]
    assert [(r["project_id"], r["run_name"]) for r in sections["active_runs"]["rows"]] == [
        ("lp2", "1")
    ]
    page = tmp_path / "report.html"
    report(run_cli, db_url, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    by_project = html.split("<h2>Runs by project</h2>")[1].split("</section>")[0]
    weekly = html.split("<h2>Runs created per week, by status</h2>")[1].split("</section>")[0]
    for chart in (by_project, weekly):
        assert "gone (deleted upstream)" in chart
    assert f"{KOREAN} (kq1), gone (deleted upstream): 1" in by_project
    assert f"{KOREAN} (kq1), in progress" not in by_project  # its only run in progress is gone
    titles = re.findall(r"<title>week of 2026-01-12, ([^<]*)</title>", weekly)
    assert sorted(titles) == [
        "completed (RUN_STATE_COMPLETED): 1 runs",
        "gone (deleted upstream): 1 runs",
        "in progress (RUN_STATE_IN_PROGRESS): 1 runs",
    ]


# Statuses named like runs_by_project's fixed columns, like another status's short name, like
# a name the prefix makes, and two that lower-casing would merge.
ODD_STATUSES = (
    "project_name",
    "runs",
    "gone",
    "status_runs",
    "RUN_STATE_RUNS",
    "failed",
    "Running",
    "RUNNING",
)


def _odd_table(run_cli, db_url, tmp_path):
    bodies = [
        {"projectId": "p", "projectName": "P", "runName": str(i), "status": status}
        for i, status in enumerate(("RUN_STATE_FAILED", *ODD_STATUSES, None))
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    assert run_cli("load", str(path), "--db", db_url).exit_code == 0


ODD_COLUMNS = [
    "project_name",
    "project_id",
    "runs",
    "failed",  # RUN_STATE_FAILED: a documented status keeps its short name
    "RUNNING",
    "RUN_STATE_RUNS",
    "Running",
    "status_failed",  # the status "failed", as written, after the documented one
    "status_gone",
    "status_project_name",
    "status_runs",  # the status "status_runs" itself
    "status_status_runs",  # the status "runs": "status_runs" was taken
    "no_status",
    "gone",
]


def test_status_names_never_overwrite_the_fixed_columns(run_cli, db_url, tmp_path):
    _odd_table(run_cli, db_url, tmp_path)
    sections = json.loads(report(run_cli, db_url, "--format", "json").stdout)
    section = sections["runs_by_project"]
    assert section["columns"] == ODD_COLUMNS
    assert section["rows"] == [
        {
            **{c: 1 for c in ODD_COLUMNS},
            "project_name": "P",
            "project_id": "p",
            "runs": 10,
            "gone": 0,
        }
    ]
    one = report(run_cli, db_url, "--format", "csv", "--view", "runs_by_project").stdout
    header, row = list(csv.reader(io.StringIO(one)))
    assert header == ODD_COLUMNS
    assert row == ["P", "p", "10", *["1"] * 10, "0"]
    text = report(run_cli, db_url, "--view", "runs_by_project").stdout.splitlines()
    assert text[1].split() == ODD_COLUMNS
    assert text[2].split() == row
    page = tmp_path / "report.html"
    report(run_cli, db_url, "--html", str(page))
    chart = (
        page.read_text(encoding="utf-8").split("<h2>Runs by project</h2>")[1].split("<table>")[0]
    )
    legend = re.findall(r'<span class="key">.*?</span> ([^<]+)</span>', chart)
    assert legend == [
        "failed",
        "RUNNING",
        "RUN_STATE_RUNS",
        "Running",
        "failed",  # the status "failed" as written: its own colour and part
        "gone",  # a status called "gone": not the runs deleted upstream (there are none)
        "project_name",
        "runs",
        "status_runs",
        "no status",
    ]
    colours = re.findall(r'<span style="color:([^"]+)">&#9632;</span> failed<', chart)
    assert len(colours) == 2 and colours[0] != colours[1]


def test_runs_by_project_from_python():
    from nsml_etl.reporting.report import runs_by_project

    table = runs_by_project(
        [
            ("p", "P", "runs", 0, 2),
            ("p", "P", "RUN_STATE_IN_PROGRESS", 1, 3),  # gone: in no status's column
            ("p", "P", "RUN_STATE_IN_PROGRESS", 0, 1),
            ("q", None, None, 0, 1),
        ]
    )
    assert table.columns == [
        "project_name",
        "project_id",
        "runs",
        "in_progress",
        "status_runs",
        "no_status",
        "gone",
    ]
    assert table.rows == [("P", "p", 6, 1, 2, 0, 3), (None, "q", 1, 0, 0, 1, 0)]
    assert table.labels == {
        "in_progress": "RUN_STATE_IN_PROGRESS",
        "status_runs": "runs",
        "no_status": "(no status)",
        "gone": "gone",
    }


def test_csv_has_every_row_unless_limit_says_otherwise(
    run_cli, make_simulator, monkeypatch, sqlite_url, credentials, tmp_path
):
    team = build_team(run_cli, make_simulator, monkeypatch, sqlite_url)
    out = tmp_path / "all"
    result = report(run_cli, team, "--out-dir", str(out))
    with open(out / "nsml_env_key_catalog.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 1 + 25  # 20 in text and JSON
    assert "Note:" not in result.stderr
    one = report(run_cli, team, "--format", "csv", "--view", "nsml_env_key_catalog")
    assert len(list(csv.reader(io.StringIO(one.stdout)))) == 1 + 25 and one.stderr == ""
    cut = report(run_cli, team, "--format", "csv", "--view", "nsml_env_key_catalog", "--limit", "3")
    assert len(list(csv.reader(io.StringIO(cut.stdout)))) == 1 + 3
    assert "Note: nsml_env_key_catalog: 3 of 25 rows shown" in cut.stderr
    # text and JSON keep their short lists; an HTML page written beside the CSV files too
    sections = json.loads(report(run_cli, team, "--format", "json").stdout)
    assert len(sections["nsml_env_key_catalog"]["rows"]) == 20
    page = tmp_path / "report.html"
    report(run_cli, team, "--out-dir", str(tmp_path / "again"), "--html", str(page))
    assert "20 of 25 rows shown" in page.read_text(encoding="utf-8")


def test_active_runs_say_how_long_they_have_run(
    run_cli, make_simulator, monkeypatch, db_url, credentials, tmp_path
):
    build_team(run_cli, make_simulator, monkeypatch, db_url)
    sections = json.loads(report(run_cli, db_url, "--format", "json").stdout)
    # lp2/1: created 10.5 days before NOW, first seen running 10 days before: started at the
    # midpoint, 10.25 days (246 h) before NOW. kq1/3 waits: no start, after the running ones.
    assert sections["active_runs"]["rows"] == [
        {
            "project_name": "llm-pretrain",
            "project_id": "lp2",
            "run_name": "1",
            "status": "RUN_STATE_IN_PROGRESS",
            "creator": "user-lp2",
            "eng_full_name": "[GPU] A100 2EA",
            "created_at": "2026-01-10T00:00:00Z",
            "started_at": "2026-01-10T06:00:00Z",
            "running_for_h": 246,
        },
        {
            "project_name": KOREAN,
            "project_id": "kq1",
            "run_name": "3",
            "status": "RUN_STATE_PENDING",
            "creator": "user-kq1",
            "eng_full_name": "[GPU] A100 2EA",
            "created_at": "2026-01-18T00:00:00Z",
            "started_at": None,
            "running_for_h": None,
        },
    ]
    assert sections["active_runs"]["total_rows"] == sections["headline"]["rows"][0]["active_runs"]
    page = tmp_path / "report.html"
    report(run_cli, db_url, "--html", str(page))
    table = page.read_text(encoding="utf-8").split("<h2>Active runs and how long")[1]
    cells = re.findall(r"<td>(.*?)</td>", table.split("</table>")[0])
    assert cells == [
        'llm-pretrain<br><span class="muted">lp2</span>',
        "1",
        "in progress",
        "user-lp2",
        "[GPU] A100 2EA",
        "10 d 6 h (since 2026-01-10 06:00:00 UTC)",
        f'{KOREAN}<br><span class="muted">kq1</span>',
        "3",
        "pending",
        "user-kq1",
        "[GPU] A100 2EA",
        "waiting since 2026-01-18 00:00:00 UTC",
    ]


def test_recent_status_changes_name_the_project(
    run_cli, make_simulator, monkeypatch, db_url, credentials, tmp_path
):
    build_team(run_cli, make_simulator, monkeypatch, db_url)
    sections = json.loads(report(run_cli, db_url, "--format", "json").stdout)
    changes = sections["nsml_status_transitions"]["rows"]
    assert [
        (c["project_id"], c["project_name"], c["run_name"], c["previous_status"], c["status"])
        for c in changes
    ] == [
        ("kq1", KOREAN, "2", "RUN_STATE_IN_PROGRESS", "RUN_STATE_FAILED"),
        ("kq1", KOREAN, "1", "RUN_STATE_IN_PROGRESS", "RUN_STATE_FAILED"),
    ]
    page = tmp_path / "report.html"
    report(run_cli, db_url, "--html", str(page))
    table = page.read_text(encoding="utf-8").split("<h2>Recent status changes</h2>")[1]
    cells = re.findall(r"<td>(.*?)</td>", table.split("</table>")[0])
    in_words = (
        '<span title="RUN_STATE_IN_PROGRESS">in progress</span> &rarr; '
        '<span title="RUN_STATE_FAILED">failed</span>'
    )
    assert cells == [
        f'{KOREAN}<br><span class="muted">kq1</span>',
        "2",
        in_words,
        "2026-01-19 12:00:00",
        f'{KOREAN}<br><span class="muted">kq1</span>',
        "1",
        in_words,
        "2026-01-11 12:00:00",
    ]


def _fill_colours(chart):
    return set(re.findall(r'<rect [^>]*fill="([^"]+)"', chart))


def test_html_colours_axes_and_labels(
    run_cli, make_simulator, monkeypatch, sqlite_url, credentials, tmp_path
):
    from nsml_etl.reporting.charts import STATUS_COLORS as _STATUS_COLORS
    from nsml_etl.reporting.charts import axis_scale as _scale

    team = build_team(run_cli, make_simulator, monkeypatch, sqlite_url)
    # a GPU count, so the hours chart is per project in GPU-hours
    assert run_cli("gpu-servers", "set", "207", "2", "--db", team).exit_code == 0
    page = tmp_path / "report.html"
    report(run_cli, team, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    hours = html.split("<h2>GPU-hours per project per week</h2>")[1].split("</section>")[0]
    projects = _fill_colours(hours)
    assert len(projects) == 2 and not projects & set(_STATUS_COLORS.values())
    # the weekly runs chart: totals 2, 3 and 2 runs, so its axis goes 0, 1, 2, 3 (not to 4)
    weekly = html.split("<h2>Runs created per week, by status</h2>")[1].split("</section>")[0]
    assert re.findall(r'text-anchor="end">([^<]+)</text>', weekly) == ["0", "1", "2", "3"]
    # statuses in words in the legends
    legend = re.findall(r'<span class="key">.*?</span> ([^<]+)</span>', weekly)
    assert legend == ["pending", "in progress", "completed", "failed", "stopped", "canceled"]
    assert "RUN_STATE" not in "".join(legend)
    assert [_scale(v, False) for v in (149, 19.2, 0.3, 0)] == [
        (50, 150),
        (5, 20),
        (0.1, 0.3),
        (1, 1),
    ]
    assert [_scale(v, True) for v in (24, 3, 1, 7)] == [(5, 25), (1, 3), (1, 1), (2, 8)]


# Draws each character of a Korean name on a canvas: without a Korean font every one is the
# same empty box, so a name drawn as glyphs has characters that look different.
DRAWN = """<script>
addEventListener("load", () => {
  const font = getComputedStyle(document.body).font;
  const pixels = (text) => {
    const canvas = document.createElement("canvas");
    canvas.width = 40; canvas.height = 40;
    const context = canvas.getContext("2d");
    context.font = font;
    context.fillText(text, 2, 28);
    return Array.from(context.getImageData(0, 0, 40, 40).data).join(",");
  };
  const names = ["%s"];
  const pre = document.createElement("pre");
  pre.id = "drawn";
  const shapes = (n) => new Set([...n].filter((c) => c.trim()).map(pixels)).size;
  pre.textContent = JSON.stringify(names.map((n) => shapes(n) > 1));
  document.body.append(pre);
});
</script>"""


def test_korean_project_names_are_drawn_in_chromium(
    run_cli, make_simulator, monkeypatch, sqlite_url, credentials, tmp_path
):
    """The page in a browser draws the Korean names as glyphs (with no Korean font they were
    empty boxes: the screenshot showed them)."""
    browser = _chromium(tmp_path)
    if (
        shutil.which("fc-list")
        and not subprocess.run(
            ["fc-list", ":lang=ko"], capture_output=True, text=True, check=False
        ).stdout.strip()
    ):
        if os.environ.get("NSML_ETL_REQUIRE_BROWSER") == "1":
            pytest.fail("a Korean font is required here (apt-get install fonts-nanum)")
        pytest.skip("no Korean font on this machine (CI installs fonts-nanum)")
    team = build_team(run_cli, make_simulator, monkeypatch, sqlite_url)
    page = tmp_path / "report.html"
    report(run_cli, team, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert KOREAN in html
    measured = tmp_path / "drawn.html"
    measured.write_text(html.replace("</body>", DRAWN % KOREAN + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [*browser, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert json.loads(unescape(dom.split('<pre id="drawn">')[1].split("</pre>")[0])) == [True]
