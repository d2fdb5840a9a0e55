"""``nsml-etl report``: a short summary read from the reporting views, as text, CSV, JSON or
one self-contained HTML page (inline CSS and SVG: no CDN, no web fonts, works offline)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from .config import DEFAULT_TABLE
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


def _bar_chart(items: list[tuple[str, float]], unit: str) -> str:
    """Horizontal bars as inline SVG."""
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
            f'<text x="{label_width + width + 6}" y="{y + 15}">{value:g}</text>'
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
    body = "".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>"
                   for name, content in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"muted\">Generated {generated} by "
            f"nsml-etl from the reporting views.</p>{body}</body></html>\n")
