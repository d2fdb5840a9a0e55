"""The `report` command people can rely on (issue 15): what it reads, what it prints in each
format, and the HTML page. The views themselves are tested in test_views.py."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html import escape as html_escape
from html import unescape as html_unescape

import pytest
import sqlalchemy as sa
from conftest import _server_database, table_names
from wcwidth import wcswidth

from nsml_etl.reporting.report import SECTION_NAMES

# -- a database that is not one of ours -------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "views"])
def test_a_mistyped_sqlite_path_is_exit_4_and_creates_nothing(run_cli, tmp_path, command):
    (tmp_path / "nsml_runs.db").write_bytes(b"")  # the file the user meant
    typo = tmp_path / "nsml_run.db"
    result = run_cli(command, "--db", f"sqlite:///{typo}")
    assert result.exit_code == 4, result.output
    assert f"no nsml-etl tables in SQLite database {typo}: the file does not exist" in result.stderr
    assert f"did you mean {tmp_path / 'nsml_runs.db'}?" in result.stderr
    assert "Traceback" not in result.output
    assert not typo.exists()  # regression: it was created, with every table, and exit 0

    elsewhere = tmp_path / "nowhere.db"
    result = run_cli(command, "--db", f"sqlite:///{elsewhere}")
    assert result.exit_code == 4 and "check --db" in result.stderr
    assert not elsewhere.exists()


@pytest.mark.parametrize("command", ["report", "views"])
@pytest.mark.parametrize("form", ["file:{path}?uri=true", "file:{name}"])
def test_a_missing_sqlite_file_named_the_uri_way_is_not_created_either(
    run_cli, tmp_path, monkeypatch, command, form
):
    """Regression: a ``file:`` database was taken for something other than a file, so these
    commands opened it and created it: as a SQLite URI (``?uri=true``), or, without it, as
    the file SQLite then opens, literally named ``file:nsml_run.db``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nsml_runs.db").write_bytes(b"")
    typo = tmp_path / "nsml_run.db"
    database = form.format(path=typo, name=typo.name)
    result = run_cli(command, "--db", f"sqlite:///{database}")
    assert result.exit_code == 4, result.output
    assert "the file does not exist; did you mean " in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nsml_runs.db"]


@pytest.mark.parametrize("command", ["report", "views"])
def test_a_database_without_our_tables_is_exit_4_and_left_alone(run_cli, db_url, command):
    if db_url.startswith("sqlite"):  # an existing SQLite file with somebody else's table
        path = db_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    before = table_names(db_url)
    result = run_cli(command, "--db", db_url)
    assert result.exit_code == 4, result.output
    assert "Error: no nsml-etl tables in " in result.stderr
    assert "check --db and --table, or run export or load first" in result.stderr
    assert table_names(db_url) == before


def test_a_mistyped_table_names_the_tables_there(run_cli, sqlite_url, tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"projectId": "p", "runName": "1"}\n')
    assert run_cli("load", str(runs), "--db", sqlite_url, "--table", "team_a").exit_code == 0
    before = table_names(sqlite_url)
    for command in ("report", "views"):
        result = run_cli(command, "--db", sqlite_url, "--table", "team_b")
        assert result.exit_code == 4, result.output
        assert "no table team_b in SQLite database" in result.stderr
        assert "its nsml-etl tables: team_a (choose one with --table)" in result.stderr
    assert table_names(sqlite_url) == before
    assert run_cli("report", "--db", sqlite_url, "--table", "team_a").exit_code == 0


# -- a team's table: two projects (one Korean), long labels, every status -----------------------

NOW = datetime(2026, 1, 20, 12, 0)  # a Tuesday; the report runs with NSML_ETL_CLOCK set to it
KOREAN = "비전 연구팀"
LONG_IMAGE = (
    "registry.very-long-hostname.example.com/team/research/트레이너-image-with-a-"
    "long-name:v2.1.0-cuda12"
)


def _body(project, name, status, created, image="nvcr.io/nvidia/pytorch:23.10-py3", envs=None):
    project_name = KOREAN if project == "kq1" else "llm-pretrain"
    kst = (created + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")  # as the run list says
    return {
        "projectId": project,
        "runName": name,
        "projectName": project_name,
        "status": status,
        "creator": f"user-{project}",
        "engFullName": "[GPU] A100 2EA",
        "gpuSvrCode": 207,
        "imageType": "BASE",
        "imagePath": image,
        "envs": envs or {},
        "_createTime": kst,
        "_updateTime": kst,
    }


def build_team(run_cli, make_simulator, monkeypatch, db_url):
    """Four exports (10, 9, 2 and 1 days before NOW): kq1/1 fails between the first two (9.5
    days before NOW), kq1/2 between the last two (1.5 days before); kq1/3 waits and lp2/1 runs
    (active); lp2/2 is stopped, lp2/3 canceled, kq1/4 completed; lp2/1 has 25 env keys."""
    sim = make_simulator(projects=0)
    day = timedelta(days=1)
    put = sim.put_run

    def export(at):
        monkeypatch.setenv("NSML_ETL_CLOCK", at.isoformat() + "Z")
        result = run_cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
        assert result.exit_code == 0, result.output

    put("kq1", "1", _body("kq1", "1", "RUN_STATE_IN_PROGRESS", NOW - 10.5 * day))
    put(
        "lp2",
        "1",
        _body(
            "lp2",
            "1",
            "RUN_STATE_IN_PROGRESS",
            NOW - 10.5 * day,
            LONG_IMAGE,
            {f"KEY_{i:02d}": str(i) for i in range(25)},
        ),
    )
    export(NOW - 10 * day)
    put("kq1", "1", _body("kq1", "1", "RUN_STATE_FAILED", NOW - 10.5 * day))
    export(NOW - 9 * day)
    put("kq1", "2", _body("kq1", "2", "RUN_STATE_IN_PROGRESS", NOW - 2.5 * day))
    put("kq1", "3", _body("kq1", "3", "RUN_STATE_PENDING", NOW - 2.5 * day))
    put("lp2", "2", _body("lp2", "2", "RUN_STATE_STOPPED", NOW - 2.5 * day, LONG_IMAGE))
    export(NOW - 2 * day)
    put("kq1", "2", _body("kq1", "2", "RUN_STATE_FAILED", NOW - 2.5 * day))
    put("kq1", "4", _body("kq1", "4", "RUN_STATE_COMPLETED", NOW - 1.5 * day))
    put("lp2", "3", _body("lp2", "3", "RUN_STATE_CANCELED", NOW - 1.5 * day))
    export(NOW - day + timedelta(microseconds=70317))  # a moment with microseconds
    monkeypatch.setenv("NSML_ETL_CLOCK", NOW.isoformat() + "Z")
    return db_url


@pytest.fixture
def team(run_cli, make_simulator, monkeypatch, sqlite_url, credentials):
    return build_team(run_cli, make_simulator, monkeypatch, sqlite_url)


def report(run_cli, db_url, *args):
    result = run_cli("report", "--db", db_url, *args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def test_json_is_keyed_by_view_name_on_every_database(
    run_cli, make_simulator, monkeypatch, db_url, credentials
):
    build_team(run_cli, make_simulator, monkeypatch, db_url)
    sections = json.loads(report(run_cli, db_url, "--format", "json").stdout)
    assert list(sections) == list(SECTION_NAMES)
    assert sections["nsml_gpu_usage"]["title"] == "GPU servers"
    assert sections["headline"]["rows"] == [
        {
            "runs": 7,
            "active_runs": 2,
            "failed_last_7_days": 1,
            "projects": 2,
            "last_successful_export": "2026-01-19T12:00:00Z",
        }
    ]
    assert sections["runs_by_project"]["columns"] == [
        "project_name",
        "project_id",
        "runs",
        "pending",
        "in_progress",
        "completed",
        "failed",
        "stopped",
        "canceled",
        "gone",
    ]
    assert sections["runs_by_project"]["rows"] == [
        {
            "project_name": KOREAN,
            "project_id": "kq1",
            "runs": 4,
            "pending": 1,
            "in_progress": 0,
            "completed": 1,
            "failed": 2,
            "stopped": 0,
            "canceled": 0,
            "gone": 0,
        },
        {
            "project_name": "llm-pretrain",
            "project_id": "lp2",
            "runs": 3,
            "pending": 0,
            "in_progress": 1,
            "completed": 0,
            "failed": 0,
            "stopped": 1,
            "canceled": 1,
            "gone": 0,
        },
    ]
    # numbers stay numbers (Decimal on PostgreSQL and MariaDB), periods and weeks are dates
    assert sections["analytics_period"]["rows"][0]["since"] == "2025-12-01"
    hours = sections["run_hours_per_project"]["rows"]
    assert hours and all(isinstance(r["run_hours"], int | float) for r in hours)
    assert {r["week"] for r in hours} <= {"2026-01-05", "2026-01-12", "2026-01-19"}
    catalog = sections["nsml_env_key_catalog"]
    assert len(catalog["rows"]) == 20 and catalog["total_rows"] == 25
    assert catalog["note"].startswith("20 of 25 rows shown")


def test_as_json_renders_what_drivers_return():
    from nsml_etl.reporting.formats import as_json
    from nsml_etl.reporting.report import Table

    table = Table(
        "t",
        "T",
        ["a", "b", "c", "d", "e_at", "f"],
        [
            (
                Decimal("1.50"),
                Decimal("2"),
                b"bytes",
                float("nan"),
                datetime(2026, 1, 5, 21, 33, 45, 70317, tzinfo=UTC),
                date(2026, 1, 5),
            ),
            (
                uuid.UUID(int=1),
                timedelta(hours=1),
                None,
                1.0,
                "2026-01-05 21:33:45.070317",
                "2026-01-05 21:33:45.070317",
            ),
        ],
    )
    assert json.loads(as_json([table]))["t"]["rows"] == [
        {
            "a": 1.5,
            "b": 2,
            "c": "bytes",
            "d": None,
            "e_at": "2026-01-05T21:33:45Z",
            "f": "2026-01-05",
        },
        {
            "a": "00000000-0000-0000-0000-000000000001",
            "b": "1:00:00",
            "c": None,
            "d": 1.0,
            "e_at": "2026-01-05T21:33:45Z",  # SQLite's text, in a time column
            "f": "2026-01-05 21:33:45.070317",
        },
    ]  # text elsewhere stays as it is


def test_times_are_utc_to_the_second_in_every_format(run_cli, team, tmp_path):
    microseconds = re.compile(r"\d\d:\d\d:\d\d\.\d")
    text = report(run_cli, team, "--limit", "0").stdout
    page = tmp_path / "report.html"
    report(run_cli, team, "--html", str(page))
    as_json = report(run_cli, team, "--format", "json").stdout
    out = tmp_path / "csv"
    report(run_cli, team, "--out-dir", str(out))
    csv_text = "".join(p.read_text(encoding="utf-8") for p in sorted(out.glob("*.csv")))
    for output in (text, page.read_text(encoding="utf-8"), as_json, csv_text):
        assert "2026-01-19" in output and not microseconds.search(output)
    assert "fetched_at (UTC)" in text and "changed_at (UTC)" in text
    assert "2026-01-19 12:00:00" in text
    assert "changed at (UTC)" in page.read_text(encoding="utf-8")
    assert '"2026-01-19T12:00:00Z"' in as_json and "2026-01-19T12:00:00Z" in csv_text


def _starts(line, cells):
    """Where each of ``cells`` starts in ``line`` (found in order), in terminal cells."""
    found, at = [], 0
    for cell in cells:
        at = line.index(cell, at)
        found.append(wcswidth(line[:at]))
        at += len(cell)
    return found


def test_text_columns_line_up_after_korean_names(run_cli, team):
    """Regression: every column after a Korean project name was one cell off per character
    (len() counted one where a terminal shows two)."""
    text = report(run_cli, team).stdout
    sections = json.loads(report(run_cli, team, "--format", "json").stdout)
    for name in ("runs_by_project", "nsml_runs_by_project_status"):
        block = text.split(f"({name})\n")[1].split("\n\n")[0].splitlines()
        columns = sections[name]["columns"]
        header = _starts(block[0], columns)
        rows = [[str(row[c]) for c in columns] for row in sections[name]["rows"]]
        assert any(KOREAN in row for row in rows)
        assert len(block) == 1 + len(rows)
        for line, row in zip(block[1:], rows, strict=True):
            assert _starts(line, row) == header, line


def test_limit_applies_to_every_table_in_every_format(run_cli, team, tmp_path):
    default = report(run_cli, team).stdout
    assert "(20 of 25 rows shown; --limit N for more, 0 for all)" in default  # env keys
    text = report(run_cli, team, "--limit", "2").stdout
    blocks = [b for b in text.split("== ")[1:]]
    assert len(blocks) == len(SECTION_NAMES)
    for block in blocks:
        rows = [
            line
            for line in block.splitlines()[2:]
            if line.strip() and not line.strip().startswith("(")
        ]
        assert len(rows) <= 2, block
    assert "(2 of 3 rows shown;" in text.split("(nsml_runs_by_project_status)")[1]
    sections = json.loads(report(run_cli, team, "--format", "json", "--limit", "2").stdout)
    for name, section in sections.items():
        assert len(section["rows"]) <= 2, name
        assert ("note" in section) == (section["total_rows"] > len(section["rows"])), name
    assert sections["nsml_env_key_catalog"]["note"].startswith("2 of 25 rows shown")
    assert sections["nsml_env_key_catalog"]["total_rows"] == 25
    out = tmp_path / "csv"
    result = report(run_cli, team, "--out-dir", str(out), "--limit", "2")
    for path in out.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            assert len(list(csv.reader(handle))) <= 3, path
    assert "Note: nsml_env_key_catalog: 2 of 25 rows shown" in result.stderr
    page = tmp_path / "report.html"
    report(run_cli, team, "--html", str(page), "--limit", "1")
    html = page.read_text(encoding="utf-8")
    assert "1 of 2 rows shown" in html.split("<h2>Runs by project</h2>")[1]
    assert html.count("<tr>") <= 1 + 2 * 12  # a header and one row per table
    everything = json.loads(report(run_cli, team, "--format", "json", "--limit", "0").stdout)
    assert all("note" not in s for s in everything.values())
    assert len(everything["nsml_env_key_catalog"]["rows"]) == 25


def test_csv_is_one_table_a_reader_can_parse(run_cli, team, tmp_path):
    mixed = run_cli("report", "--db", team, "--format", "csv")
    assert mixed.exit_code == 2
    assert "--format csv prints one section: add --view NAME" in mixed.stderr
    assert "or --out-dir DIR for a CSV file per section" in mixed.stderr
    one = report(run_cli, team, "--format", "csv", "--view", "runs_by_project").stdout
    rows = list(csv.DictReader(io.StringIO(one)))
    assert [(r["project_name"], r["runs"], r["failed"]) for r in rows] == [
        (KOREAN, "4", "2"),
        ("llm-pretrain", "3", "0"),
    ]
    out = tmp_path / "sections"
    result = report(run_cli, team, "--out-dir", str(out))
    assert result.stdout == "" and f"Wrote 23 CSV files to {out}." in result.stderr
    assert sorted(p.stem for p in out.glob("*.csv")) == sorted(SECTION_NAMES)
    for path in out.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            header, *body = list(csv.reader(handle))
        assert all(len(row) == len(header) for row in body), path
    bad = run_cli("report", "--db", team, "--view", "nsml_gpu_usgae")
    assert bad.exit_code == 2 and "did you mean nsml_gpu_usage?" in bad.stderr
    assert run_cli("report", "--db", team, "--out-dir", str(out), "--format", "json").exit_code == 2
    only = json.loads(report(run_cli, team, "--format", "json", "--view", "headline").stdout)
    assert list(only) == ["headline"]


def test_view_repeated_keeps_each_section(run_cli, team):
    # Regression: the second --view replaced the first, silently.
    both = report(
        run_cli, team, "--format", "json", "--view", "runs_by_project", "--view", "headline"
    )
    assert list(json.loads(both.stdout)) == ["headline", "runs_by_project"]  # the report's order
    text = report(run_cli, team, "--view", "headline", "--view", "runs_by_project").stdout
    assert text.count("== ") == 2
    csv_two = run_cli("report", "--db", team, "--format", "csv", "--view", "headline")
    assert csv_two.exit_code == 0
    csv_two = run_cli(
        "report", "--db", team, "--format", "csv", "--view", "headline", "--view", "nsml_gpu_usage"
    )
    assert csv_two.exit_code == 2 and "--format csv prints one section" in csv_two.stderr


def test_html_prints_one_line_saying_where(run_cli, team, tmp_path):
    page = tmp_path / "report.html"
    result = report(run_cli, team, "--html", str(page))
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == f"Wrote the HTML report to {page}."
    both = report(run_cli, team, "--html", str(page), "--format", "json")
    assert json.loads(both.stdout)["headline"]


def _fills(page_text, status):
    """The fill of each chart part that stands for ``status``."""
    return set(re.findall(r'fill="([^"]+)"><title>[^<]*' + status + r"\b", page_text))


def test_status_colours_follow_the_name(run_cli, team, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in (
                {"projectId": "x", "runName": "1", "status": "RUN_STATE_STOPPED"},
                {"projectId": "x", "runName": "2", "status": "RUN_STATE_SOMETHING_NEW"},
                {"projectId": "x", "runName": "3", "status": "RUN_STATE_FAILED"},
            )
        )
    )
    assert run_cli("load", str(other), "--db", team, "--table", "other").exit_code == 0
    pages = []
    for args in ((), ("--table", "other")):
        page = tmp_path / f"report{len(pages)}.html"
        report(run_cli, team, "--html", str(page), *args)
        pages.append(page.read_text(encoding="utf-8"))
    for status in ("RUN_STATE_STOPPED", "RUN_STATE_FAILED"):
        colours = _fills(pages[0], status) | _fills(pages[1], status)
        assert len(colours) == 1, (status, colours)  # one colour, in both reports and charts
    assert len(_fills(pages[1], "RUN_STATE_SOMETHING_NEW")) == 1
    assert _fills(pages[1], "RUN_STATE_SOMETHING_NEW") != _fills(pages[1], "RUN_STATE_FAILED")


@pytest.mark.filterwarnings("ignore:Query string argument")  # SQLAlchemy's, on the password
def test_html_has_the_headline_and_runs_by_project(run_cli, team, tmp_path):
    page = tmp_path / "report.html"
    # A URL that carries a password (SQLite ignores it): the page must never show it.
    report(run_cli, f"{team}?password=pwSECRET-html", "--html", str(page))
    html = page.read_text(encoding="utf-8")
    cards = dict(
        (label, value)
        for value, label in re.findall(r'<div class="card[^"]*"><b>([^<]*)</b>([^<]*)</div>', html)
    )
    assert cards == {
        "runs": "7",
        "active now": "2",
        "failed in the last 7 days": "1",
        "projects": "2",
        "last successful export": "2026-01-19 12:00:00 UTC",
    }
    section = html.split("<h2>Runs by project</h2>")[1].split("</section>")[0]
    assert KOREAN in section and "kq1" in section and "llm-pretrain" in section
    assert "비전 연구팀 (kq1), failed (RUN_STATE_FAILED): 2" in section  # each part says it
    assert "<th>project_<wbr>id</th>" in section
    # the weekly chart: an axis, each week's total over its column, dates with their year
    weekly = html.split("<h2>Runs created per week, by status</h2>")[1].split("</section>")[0]
    assert weekly.count("<line") == 4  # 0 to 3 runs: the axis ends at the tallest column
    assert re.findall(r'<text class="value"[^>]*>(\d+)</text>', weekly) == ["2", "3", "2"]
    assert re.findall(r"rotate\(45[^)]*\)\">([^<]+)</text>", weekly) == [
        "2026-01-05",
        "2026-01-12",
        "2026-01-19",
    ]
    # a long label keeps its start and its end, and says it all on hover
    images = html.split("<h2>Top images</h2>")[1].split("</section>")[0]
    full = html_escape(f"{LONG_IMAGE} (BASE)")
    shown = re.search(r"<title>" + re.escape(full) + r"</title>([^<]+)</text>", images)
    assert shown is not None
    assert shown.group(1).startswith("registry.very-long") and shown.group(1).endswith(
        "cuda12 (BASE)"
    )
    assert "pwSECRET-html" not in html
    assert f"from table nsml_runs in SQLite database {team.removeprefix('sqlite:///')}." in html


MEASURE = """<script>
addEventListener("load", () => {
  const out = [];
  for (const text of document.querySelectorAll("svg text")) {
    const box = text.getBoundingClientRect(), svg = text.ownerSVGElement.getBoundingClientRect();
    out.push([text.lastChild.textContent, box.left - svg.left, svg.right - box.right,
              svg.bottom - box.bottom]);
  }
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.append(pre);
});
</script>"""


def _chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("NSML_ETL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (NSML_ETL_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium on this machine (CI installs it)")
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]


def test_html_in_chromium_keeps_every_label_inside_its_chart(run_cli, team, tmp_path):
    """The page as a browser lays it out: no chart text is cut at an edge (the long image
    label lost its start at the left edge), and a screenshot shows something."""
    browser = _chromium(tmp_path)
    page = tmp_path / "report.html"
    report(run_cli, team, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    for remote in ("http://", "https://", "@import", "<script", "<link"):
        assert remote not in html  # no CDN, no web fonts, no script: works offline
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [*browser, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    texts = json.loads(html_unescape(dom.split('<pre id="measured">')[1].split("</pre>")[0]))
    assert len(texts) > 50
    outside = [t for t in texts if min(t[1:]) < -1]
    assert outside == []
    assert any(t[0].startswith("registry.very-long") for t in texts)
    shot = tmp_path / "report.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page


@pytest.fixture
def pg_url():
    yield from _server_database("postgresql")


def test_the_page_never_shows_the_database_password(run_cli, pg_url, tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"projectId": "p", "runName": "1", "status": "RUN_STATE_FAILED"}\n')
    assert run_cli("load", str(runs), "--db", pg_url).exit_code == 0
    url = sa.make_url(pg_url).set(password="s3cret-Pa55")  # the test server trusts anyone
    page = tmp_path / "report.html"
    result = report(run_cli, url.render_as_string(hide_password=False), "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert html_escape(f"database '{url.database}' on {url.host}:{url.port}") in html
    assert "s3cret-Pa55" not in html + result.output
