"""The `nsml-etl report` command: a short summary read from the reporting views, as text, CSV,
JSON or one self-contained HTML page (inline CSS and SVG: no CDN, no web fonts, works offline)."""

from __future__ import annotations

import csv
import difflib
import html
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .config import DEFAULT_TABLE
from .dialects import first_line
from .errors import DatabaseError
from .load import BATCHES_TABLE
from .viewnames import view_name
from .views import query_view


@dataclass(frozen=True)
class Section:
    title: str
    view: str
    order_by: str | None = None
    limit: int | None = None


SECTIONS = (
    Section("Runs by project and status", "nsml_runs_by_project_status", "runs DESC", 20),
    Section("Active runs", "nsml_active_runs", "create_time DESC, project_id, run_name", 20),
    Section("GPU servers", "nsml_gpu_usage", "runs DESC", 10),
    Section("Top images", "nsml_image_usage", "runs DESC", 10),
    Section("Busiest creators", "nsml_creator_activity", "runs DESC", 10),
    Section("Env keys in use", "nsml_env_key_catalog", "runs DESC, env_key", 20),
    Section("Runs created per week", "nsml_runs_per_week", "week, status", None),
    Section("Recent status changes", "nsml_status_transitions", "changed_at DESC", 20),
    Section("Export freshness", "nsml_export_freshness"),
)


# The analytics sections (etl/analytics.py), by title: the keys of the JSON report.
PERIOD_TITLE = "Analytics period"
HOURS_TITLE = "Run-hours and GPU-hours per project and week"
SERVERS_TITLE = "Run-hours per GPU server"
WAITS_TITLE = "Queue wait per week"
WEEKLY_FAILURES_TITLE = "Failure rate per week"
FAILURE_TITLES = {"image": "Failure rate by image", "gpu_server": "Failure rate by GPU server",
                  "creator": "Failure rate by creator"}
MISSING_TITLE = "GPU servers without a GPU count"


def describe_database(url: sa.URL) -> str:
    """The database for people: the SQLite file, or the database and host (never a user name
    or password)."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database or ':memory:'}"
    where = f"{url.host or 'localhost'}{':' + str(url.port) if url.port else ''}"
    return f"{url.get_backend_name()} database {url.database!r} on {where}"


def _sqlite_path(url: sa.URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return Path(database)


def require_runs_table(engine: Engine, table: str) -> None:
    """:class:`DatabaseError` (exit 4) unless ``table`` exists: ``report`` and ``views`` read
    what ``export`` and ``load`` wrote, so a mistyped ``--db`` or ``--table`` must not pass for
    an empty database, nor create one (a SQLite file that does not exist is never opened)."""
    where = describe_database(engine.url)
    path = _sqlite_path(engine.url)
    if path is not None and not path.exists():
        siblings = [p.name for p in path.parent.glob(f"*{path.suffix}") if p.is_file()]
        near = difflib.get_close_matches(path.name, siblings, n=1)
        hint = f"; did you mean {path.parent / near[0]}?" if near else \
            "; check --db (export or load creates it)"
        raise DatabaseError(f"no nsml-etl tables in {where}: the file does not exist{hint}")
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table(table):
                return
            others = []
            if inspector.has_table(BATCHES_TABLE):
                batches = sa.table(BATCHES_TABLE, sa.column("table_name"))
                named = conn.execute(sa.select(batches.c.table_name).distinct()).scalars()
                others = sorted(name for name in named if name and inspector.has_table(name))
            conn.rollback()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"reading the tables of {where} failed: {first_line(exc)}") from None
    if others:
        raise DatabaseError(f"no table {table} in {where}; its nsml-etl tables: "
                            f"{', '.join(others)} (choose one with --table)")
    raise DatabaseError(f"no nsml-etl tables in {where}: check --db and --table, or run "
                        "export or load first")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple]


def collect(engine: Engine, table: str = DEFAULT_TABLE) -> list[Table]:
    """Each section read from ``table``'s own views."""
    tables = []
    for section in SECTIONS:
        columns, rows = query_view(engine, view_name(table, section.view), section.order_by,
                                   section.limit)
        tables.append(Table(section.title, columns, rows))
    return tables


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def as_text(tables: list[Table], max_width: int = 40) -> str:
    out = []
    for table in tables:
        out.append(f"== {table.title}")
        if not table.rows:
            out.append("   (none)\n")
            continue
        cells = [[_cell(v)[:max_width] for v in row] for row in table.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(table.columns)]
        out.append("   " + "  ".join(c.ljust(w) for c, w in zip(table.columns, widths,
                                                                  strict=True)))
        for row in cells:
            out.append("   " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        out.append("")
    return "\n".join(out)


def as_json(tables: list[Table]) -> str:
    return json.dumps(
        {t.title: [dict(zip(t.columns, map(_jsonable, r), strict=True)) for r in t.rows]
         for t in tables},
        ensure_ascii=False, indent=2,
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else \
        float(value) if type(value).__name__ == "Decimal" else value


def as_csv(tables: list[Table]) -> str:
    """One CSV: a section column, then each section's own columns (header row per section)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for table in tables:
        writer.writerow(["section", *table.columns])
        writer.writerows([table.title, *map(_cell, row)] for row in table.rows)
    return buffer.getvalue()


# -- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK KR","Malgun Gothic",
"Apple SD Gothic Neo",sans-serif;margin:2rem;color:#1d2430}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;font-size:13px}td,th{padding:.2rem .6rem;text-align:left}
tr:nth-child(even){background:#f5f6fa}th{background:#e8eaf2}
.chart text{font-size:12px}.muted{color:#667}
"""
_PALETTE = ("#3b6fd8", "#d8573b", "#2f9e6f", "#b58a16", "#8a4fd1", "#5b6b7d", "#cf4f8d")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _bar_chart(items: list[tuple[str, float]], unit: str, suffix: str = "") -> str:
    """Horizontal bars as inline SVG; ``suffix`` follows each value (say %)."""
    if not items:
        return '<p class="muted">No data yet.</p>'
    top = max(v for _, v in items) or 1
    height, label_width, bar_width = 22, 260, 420
    parts = [f'<svg class="chart" role="img" width="{label_width + bar_width + 80}" '
             f'height="{height * len(items) + 10}">']
    for i, (label, value) in enumerate(items):
        y = i * height + 5
        width = max(1, int(bar_width * value / top))
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end">'
            f"{html.escape(_shorten(label, 38))}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{width}" height="{height - 6}" '
            f'fill="{_PALETTE[0]}"><title>{html.escape(label)}: {value:g} {unit}</title></rect>'
            f'<text x="{label_width + width + 6}" y="{y + 15}">{value:g}{suffix}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _stacked_weeks(table: Table) -> str:
    """Runs created per week, stacked by status, as inline SVG columns."""
    if not table.rows:
        return '<p class="muted">No runs with a create time yet (export with --all).</p>'
    weeks: dict[str, dict[str, float]] = defaultdict(dict)
    for week, status, runs in table.rows:
        weeks[_cell(week)][status or "unknown"] = float(runs)
    statuses = sorted({s for counts in weeks.values() for s in counts})
    colors = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(statuses)}
    top = max(sum(c.values()) for c in weeks.values())
    column, chart_height = 28, 200
    width = column * len(weeks) + 60
    parts = [f'<svg class="chart" role="img" width="{max(width, 300)}" '
             f'height="{chart_height + 60}">']
    for i, (week, counts) in enumerate(sorted(weeks.items())):
        x, y = 40 + i * column, chart_height + 10
        for status in statuses:
            value = counts.get(status, 0)
            h = chart_height * value / top
            y -= h
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="{column - 6}" height="{h:.1f}" '
                         f'fill="{colors[status]}"><title>{html.escape(week)} '
                         f'{html.escape(status)}: {value:g}</title></rect>')
        parts.append(f'<text x="{x}" y="{chart_height + 28}" '
                     f'transform="rotate(45 {x} {chart_height + 28})">'
                     f"{html.escape(week[5:10])}</text>")
    parts.append("</svg><p>")
    parts += [f'<span style="color:{colors[s]}">&#9632;</span> {html.escape(s)} '
              for s in statuses]
    parts.append("</p>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 6, 8 or 10 times a power of ten that is at least
    ``value``, so that the four gridlines fall on round numbers."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 4, 6, 8, 10) if step * power >= value)


def _axis(parts: list[str], left: int, top: int, width: int, height: int, peak: float,
          unit: str) -> None:
    """Gridlines at a quarter, half, three quarters and all of ``peak``, labelled."""
    for step in range(5):
        value = peak * step / 4
        y = top + height - height * step / 4
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#dde" /><text x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{value:g}</text>')
    parts.append(f'<text x="4" y="{top - 10}" class="muted">{html.escape(unit)}</text>')


def _week_label(parts: list[str], x: float, y: int, week: str) -> None:
    parts.append(f'<text x="{x:.1f}" y="{y}" transform="rotate(45 {x:.1f} {y})">'
                 f"{html.escape(week[5:10])}</text>")


def _stacked_columns(data: dict[str, dict[str, float]], unit: str, empty: str) -> str:
    """Columns per week (``data``: week -> series -> value), stacked by series, with a y axis
    and a legend; the largest series at the bottom."""
    totals: dict[str, float] = defaultdict(float)
    for values in data.values():
        for series, value in values.items():
            totals[series] += value
    if not data or not any(totals.values()):
        return f'<p class="muted">{html.escape(empty)}</p>'
    series_order = sorted(totals, key=lambda k: (-totals[k], k))
    colors = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(series_order)}
    peak = _nice_ceiling(max(sum(values.values()) for values in data.values()))
    left, top, chart_height = 60, 24, 220
    column = max(24, min(56, 640 // len(data)))
    width = column * len(data)
    parts = [f'<svg class="chart" role="img" width="{left + width + 40}" '
             f'height="{top + chart_height + 50}">']
    _axis(parts, left, top, width, chart_height, peak, unit)
    for i, (week, values) in enumerate(sorted(data.items())):
        x, y = left + i * column + 4, top + chart_height
        for series in series_order:
            value = values.get(series, 0.0)
            h = chart_height * value / peak
            y -= h
            if value:
                parts.append(f'<rect x="{x}" y="{y:.1f}" width="{column - 8}" height="{h:.1f}" '
                             f'fill="{colors[series]}"><title>week of {html.escape(week)}, '
                             f"{html.escape(series)}: {value:.1f} {html.escape(unit)}"
                             "</title></rect>")
        _week_label(parts, x, top + chart_height + 16, week)
    parts.append("</svg><p>")
    parts += [f'<span style="color:{colors[k]}">&#9632;</span> {html.escape(k)} '
              for k in series_order]
    parts.append("</p>")
    return "".join(parts)


def _paired_columns(rows: list[tuple[str, float | None, float | None]], unit: str,
                    names: tuple[str, str], empty: str) -> str:
    """Two columns per week (say a median and a 90th percentile) side by side."""
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    if not rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    peak = _nice_ceiling(max(max(v or 0 for v in r[1:]) for r in rows))
    left, top, chart_height = 60, 24, 200
    column = max(28, min(60, 640 // len(rows)))
    parts = [f'<svg class="chart" role="img" width="{left + column * len(rows) + 40}" '
             f'height="{top + chart_height + 50}">']
    _axis(parts, left, top, column * len(rows), chart_height, peak, unit)
    colors = (_PALETTE[0], "#9db7ec")
    for i, (week, *values) in enumerate(rows):
        x = left + i * column + 4
        bar = (column - 8) / 2
        for j, value in enumerate(values):
            h = chart_height * (value or 0) / peak
            parts.append(f'<rect x="{x + j * bar:.1f}" y="{top + chart_height - h:.1f}" '
                         f'width="{bar - 1:.1f}" height="{h:.1f}" fill="{colors[j]}"><title>'
                         f"week of {html.escape(week)}, {names[j]}: "
                         f"{_cell(value)} {html.escape(unit)}</title></rect>")
        _week_label(parts, x, top + chart_height + 16, week)
    parts.append("</svg><p>")
    parts += [f'<span style="color:{colors[j]}">&#9632;</span> {html.escape(names[j])} '
              for j in range(2)]
    parts.append("</p>")
    return "".join(parts)


def _analytics_sections(by_title: dict[str, Table]) -> list[tuple[str, str]]:
    """The charts and tables of the analytics sections (when the report has them)."""
    if HOURS_TITLE not in by_title:
        return []
    period = by_title[PERIOD_TITLE]
    since, until, interval, precision = period.rows[0]
    note = (f'<p class="muted">Weeks of {_cell(since)} to {_cell(until)} (Mondays, UTC). '
            "Start and end times are estimated from the exports and the run list, and are "
            f"{html.escape(precision)}"
            + (f" (exports here are {_cell(interval)} h apart)" if interval else "")
            + ": see the nsml_run_timeline view for each run's bounds.</p>")
    hours = by_title[HOURS_TITLE]
    index = {c: i for i, c in enumerate(hours.columns)}
    gpu_known = any(row[index["gpu_hours"]] for row in hours.rows)
    measure = "gpu_hours" if gpu_known else "run_hours"
    per_week: dict[str, dict[str, float]] = defaultdict(dict)
    for row in hours.rows:
        project = _cell(row[index["project_name"]]) or _cell(row[index["project_id"]])
        per_week[_cell(row[index["week"]])][project] = float(row[index[measure]] or 0)
    unknown = sum(float(row[index["run_hours_without_gpu_count"]]) for row in hours.rows)
    caveat = ""
    if not gpu_known:
        caveat = ('<p class="muted">No GPU counts are known, so this shows run-hours: set them '
                  "with <code>nsml-etl gpu-servers set CODE GPUS</code>.</p>")
    elif unknown:
        caveat = (f'<p class="muted">{unknown:.1f} run-hours on servers without a GPU count '
                  "are not in these GPU-hours (see below).</p>")
    waits = by_title[WAITS_TITLE]
    all_waits = [(_cell(r[0]), r[4], r[5]) for r in waits.rows if r[1] is None]
    rates = by_title[FAILURE_TITLES["image"]]
    images = [(_cell(r[0]) or "unknown", round(100 * float(r[3]), 1)) for r in rates.rows]
    title = "GPU-hours" if gpu_known else "Run-hours"
    return [
        (f"{title} per project per week", note + _stacked_columns(
            per_week, "GPU-hours" if gpu_known else "run-hours",
            "No run time in this period yet: it needs exports that saw runs start or end.")
         + caveat),
        ("Queue wait per week (all projects)", _paired_columns(
            all_waits, "hours", ("median", "90th percentile"),
            "No queue waits in this period: they need runs seen waiting or running.")),
        ("Failure rate by image (failed / finished)",
         _bar_chart(images, "% failed", "%") if images else
         '<p class="muted">No finished runs in this period.</p>'),
        (SERVERS_TITLE, _html_table(by_title[SERVERS_TITLE])),
        (WEEKLY_FAILURES_TITLE, _html_table(by_title[WEEKLY_FAILURES_TITLE])),
        (FAILURE_TITLES["gpu_server"], _html_table(by_title[FAILURE_TITLES["gpu_server"]])),
        (FAILURE_TITLES["creator"], _html_table(by_title[FAILURE_TITLES["creator"]])),
        (MISSING_TITLE, _html_table(by_title[MISSING_TITLE])),
    ]


def _html_table(table: Table) -> str:
    if not table.rows:
        return '<p class="muted">None.</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in table.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def as_html(tables: list[Table], title: str = "NSML runs") -> str:
    by_title = {t.title: t for t in tables}

    def pairs(name: str, label: Any, value: str) -> list[tuple[str, float]]:
        table = by_title[name]
        index = {c: i for i, c in enumerate(table.columns)}
        return [(label(row, index), float(row[index[value]] or 0)) for row in table.rows]

    gpu = pairs("GPU servers", lambda r, i: _cell(r[i["eng_full_name"]]) or "unknown",
                "active_runs")
    images = pairs("Top images", lambda r, i: f"{_cell(r[i['image_path']])} "
                   f"({_cell(r[i['image_type']])})", "runs")
    creators = pairs("Busiest creators", lambda r, i: _cell(r[i["creator"]]) or "unknown",
                     "runs")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("Runs created per week, by status", _stacked_weeks(by_title["Runs created per week"])),
        ("Active runs by GPU server", _bar_chart([g for g in gpu if g[1] > 0], "active runs")),
        ("Top images", _bar_chart(images, "runs")),
        ("Busiest creators", _bar_chart(creators, "runs")),
        ("Env keys in use", _html_table(by_title["Env keys in use"])),
        ("Export freshness", _html_table(by_title["Export freshness"])),
        ("Recent status changes", _html_table(by_title["Recent status changes"])),
    ]
    sections[1:1] = _analytics_sections(by_title)
    body = "".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>"
                   for name, content in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"muted\">Generated {generated} by "
            f"nsml-etl from the reporting views.</p>{body}</body></html>\n")
