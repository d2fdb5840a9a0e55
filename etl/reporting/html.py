"""The report as one self-contained HTML page: inline CSS and SVG charts, no CDN, no web fonts,
works offline."""

from __future__ import annotations

import hashlib
import html
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from .formats import cell, display_width, headers, limit_note, printable, shorten_middle
from .report import (
    BY_CREATOR_HOURS,
    BY_PROJECT,
    BY_PROJECT_HOURS,
    FAILURES,
    HEADLINE,
    HOURS,
    MISSING,
    NO_STATUS,
    PERIOD,
    RECENT_DAYS,
    SERVERS,
    WAITS,
    WEEKLY_FAILURES,
    Table,
    in_status_order,
    status_column,
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK KR","Malgun Gothic",
"Apple SD Gothic Neo",sans-serif;margin:2rem;color:#1d2430}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;font-size:13px}
td,th{padding:.2rem .6rem;text-align:left;vertical-align:top}
td{max-width:28rem;overflow-wrap:anywhere}
tr:nth-child(even){background:#f5f6fa}th{background:#e8eaf2}
.chart text{font-size:12px}.chart .value{font-size:11px}.chart .inside{font-size:11px;fill:#fff}
.chart .sub{font-size:11px;fill:#667}.muted{color:#667}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #dde;border-radius:6px;padding:.5rem .9rem;min-width:6rem}
.key{white-space:nowrap;margin-right:.8rem}
.card b{display:block;font-size:1.6rem;line-height:1.2}.card.alert b{color:#c93c2b}
.card.time b{font-size:1.1rem;line-height:2.2rem}
"""
_PAGE_TITLE = "NSML runs"
_PALETTE = ("#3b6fd8", "#d8573b", "#2f9e6f", "#b58a16", "#8a4fd1", "#5b6b7d", "#cf4f8d")
# The documented statuses keep colours that mean something (failed red, completed green);
# any other status gets one computed from its name. Either way a status has one colour, in
# every chart of every report.
_STATUS_COLORS = {
    "pending": "#c9a227",
    "in_progress": "#3b6fd8",
    "completed": "#2f9e6f",
    "failed": "#d8573b",
    "stopped": "#8a4fd1",
    "canceled": "#8c96a3",
    "no_status": "#c4c9d1",
}
# Pixels a terminal cell's worth of text takes at the charts' 12px: a little more than the
# widest Latin fonts' average, so labels measured this way fit (CJK takes 2 cells, ~12px).
_CELL_PX = 7.2
# Widest label column of a chart, in pixels; longer labels keep their start and end.
_MAX_LABEL_PX = 380


def status_color(status: str) -> str:
    """The colour of a status, from its name alone (``RUN_STATE_FAILED`` and the column
    ``failed`` of runs_by_project are one status)."""
    key = status_column(status)
    if key in _STATUS_COLORS:
        return _STATUS_COLORS[key]
    hue = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") % 360
    return f"hsl({hue},55%,45%)"


def _esc(value: Any) -> str:
    return html.escape(printable(cell(value)))


def _number(value: float) -> str:
    """A value label: whole numbers as they are, others to one decimal below 10."""
    if float(value).is_integer() or abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _label(x: float, y: float, text: str, max_px: float, css: str = "") -> str:
    """An SVG label starting at ``x`` (so it never runs off the left edge), shortened in the
    middle to ``max_px``, the whole text on hover."""
    shown = shorten_middle(printable(text), max(4, int(max_px / _CELL_PX)))
    attributes = f' class="{css}"' if css else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}"{attributes}><title>{html.escape(printable(text))}'
        f"</title>{html.escape(shown)}</text>"
    )


def _label_width(labels: Iterable[str]) -> int:
    widest = max((display_width(printable(t)) for t in labels), default=0)
    return int(min(_MAX_LABEL_PX, widest * _CELL_PX + 14))


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return (
        "<p>"
        + " ".join(
            f'<span class="key"><span style="color:{color}">&#9632;</span> '
            f"{html.escape(name)}</span>"
            for name, color in items
        )
        + "</p>"
    )


def _note(table: Table) -> str:
    note = limit_note(table)
    return f'<p class="muted">{html.escape(note)}</p>' if note else ""


def _bar_chart(items: list[tuple[str, float]], unit: str, suffix: str = "") -> str:
    """Horizontal bars as inline SVG, each labelled with its value; ``suffix`` follows each
    value (say %)."""
    if not items:
        return '<p class="muted">No data yet.</p>'
    top = max(v for _, v in items) or 1
    height, bar_width = 22, 420
    label_width = _label_width(label for label, _ in items)
    parts = [
        f'<svg class="chart" role="img" width="{label_width + bar_width + 80}" '
        f'height="{height * len(items) + 10}">'
    ]
    for i, (label, value) in enumerate(items):
        y = i * height + 5
        width = max(1, int(bar_width * value / top))
        parts.append(
            _label(4, y + 15, label, label_width - 12)
            + f'<rect x="{label_width}" y="{y + 3}" width="{width}" height="{height - 6}" '
            f'fill="{_PALETTE[0]}"><title>{html.escape(printable(label))}: {value:g} {unit}'
            f'</title></rect><text x="{label_width + width + 6}" y="{y + 15}">'
            f"{value:g}{suffix}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _project_bars(table: Table) -> str:
    """Runs per project as horizontal bars stacked by status, named and with the project id
    under the name, the count in each part wide enough and the total at the end."""
    if not table.rows:
        return '<p class="muted">No runs yet.</p>'
    statuses = [table.labels.get(c, c) for c in table.columns[3:]]
    top = max(row[2] for row in table.rows) or 1
    row_height, bar_width = 38, 440
    label_width = _label_width(
        [cell(row[0]) for row in table.rows] + [cell(row[1]) for row in table.rows]
    )
    parts = [
        f'<svg class="chart" role="img" width="{label_width + bar_width + 70}" '
        f'height="{row_height * len(table.rows) + 6}">'
    ]
    for i, (name, project_id, runs, *counts) in enumerate(table.rows):
        y = i * row_height + 4
        parts.append(
            _label(4, y + 14, cell(name) or "(no name)", label_width - 12)
            + _label(4, y + 29, cell(project_id), label_width - 12, "sub")
        )
        x = float(label_width)
        for status, count in zip(statuses, counts, strict=True):
            if not count:
                continue
            width = bar_width * count / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 6}" width="{width:.1f}" height="24" '
                f'fill="{status_color(status)}"><title>{_esc(name)} '
                f"({_esc(project_id)}), {html.escape(printable(status))}: "
                f"{count}</title></rect>"
            )
            if width >= 8 * len(str(count)) + 4:
                parts.append(
                    f'<text class="inside" x="{x + width / 2:.1f}" y="{y + 22}" '
                    f'text-anchor="middle">{count}</text>'
                )
            x += width
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 22}">{runs}</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend((printable(s), status_color(s)) for s in statuses)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 6, 8 or 10 times a power of ten that is at least
    ``value``, so that the four gridlines fall on round numbers."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 4, 6, 8, 10) if step * power >= value)


def _axis(
    parts: list[str], left: int, top: int, width: int, height: int, peak: float, unit: str
) -> None:
    """Gridlines at a quarter, half, three quarters and all of ``peak``, labelled."""
    for step in range(5):
        value = peak * step / 4
        y = top + height - height * step / 4
        parts.append(
            f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#dde" /><text x="{left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:g}</text>'
        )
    parts.append(f'<text x="4" y="{top - 10}" class="muted">{html.escape(unit)}</text>')


# Room under the columns for a week's date (YYYY-MM-DD, turned 45 degrees).
_DATE_ROOM = 72


def _week_label(parts: list[str], x: float, y: int, week: str) -> None:
    """The week's Monday with its year (weeks of two years look alike without it)."""
    parts.append(
        f'<text x="{x:.1f}" y="{y}" transform="rotate(45 {x:.1f} {y})">'
        f"{html.escape(week[:10])}</text>"
    )


def _stacked_columns(
    data: dict[str, dict[str, float]],
    unit: str,
    empty: str,
    color_of: Callable[[str], str] | None = None,
    order: list[str] | None = None,
) -> str:
    """Columns per week (``data``: week -> series -> value), stacked by series, with a y axis,
    each column's total above it, each part's value inside it when it is tall enough, and a
    legend; by default the largest series at the bottom, in the palette's colours."""
    totals: dict[str, float] = defaultdict(float)
    for values in data.values():
        for series, value in values.items():
            totals[series] += value
    if not data or not any(totals.values()):
        return f'<p class="muted">{html.escape(empty)}</p>'
    series_order = order or sorted(totals, key=lambda k: (-totals[k], k))
    if color_of is None:
        palette = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(series_order)}
        color_of = palette.__getitem__
    peak = _nice_ceiling(max(sum(values.values()) for values in data.values()))
    left, top, chart_height = 60, 24, 220
    column = max(24, min(56, 640 // len(data)))
    width = column * len(data)
    parts = [
        f'<svg class="chart" role="img" width="{left + width + 40}" '
        f'height="{top + chart_height + _DATE_ROOM}">'
    ]
    _axis(parts, left, top, width, chart_height, peak, unit)
    for i, (week, values) in enumerate(sorted(data.items())):
        x, y = left + i * column + 4, float(top + chart_height)
        middle = x + (column - 8) / 2
        for series in series_order:
            value = values.get(series, 0.0)
            h = chart_height * value / peak
            y -= h
            if not value:
                continue
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{column - 8}" height="{h:.1f}" '
                f'fill="{color_of(series)}"><title>week of {html.escape(week)}, '
                f"{html.escape(printable(series))}: {value:.1f} {html.escape(unit)}"
                "</title></rect>"
            )
            if h >= 14 and column - 8 >= 7 * len(_number(value)):
                parts.append(
                    f'<text class="inside" x="{middle:.1f}" y="{y + h / 2 + 4:.1f}" '
                    f'text-anchor="middle">{_number(value)}</text>'
                )
        parts.append(
            f'<text class="value" x="{middle:.1f}" y="{y - 4:.1f}" '
            f'text-anchor="middle">{_number(sum(values.values()))}</text>'
        )
        _week_label(parts, x, top + chart_height + 16, week)
    parts.append("</svg>")
    return "".join(parts) + _legend((printable(k), color_of(k)) for k in series_order)


def _paired_columns(
    rows: list[tuple[str, float | None, float | None]],
    unit: str,
    names: tuple[str, str],
    empty: str,
) -> str:
    """Two columns per week (say a median and a 90th percentile) side by side, with a y axis
    and each value above its column where there is room."""
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    if not rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    peak = _nice_ceiling(max(max(v or 0 for v in r[1:]) for r in rows))
    left, top, chart_height = 60, 24, 200
    column = max(28, min(60, 640 // len(rows)))
    parts = [
        f'<svg class="chart" role="img" width="{left + column * len(rows) + 40}" '
        f'height="{top + chart_height + _DATE_ROOM}">'
    ]
    _axis(parts, left, top, column * len(rows), chart_height, peak, unit)
    colors = (_PALETTE[0], "#9db7ec")
    for i, (week, *values) in enumerate(rows):
        x = left + i * column + 4
        bar = (column - 8) / 2
        for j, value in enumerate(values):
            h = chart_height * (value or 0) / peak
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{top + chart_height - h:.1f}" '
                f'width="{bar - 1:.1f}" height="{h:.1f}" fill="{colors[j]}"><title>'
                f"week of {html.escape(week)}, {names[j]}: "
                f"{cell(value)} {html.escape(unit)}</title></rect>"
            )
            if value is not None and bar >= 6 * len(_number(value)):
                parts.append(
                    f'<text class="value" x="{x + j * bar + bar / 2:.1f}" '
                    f'y="{top + chart_height - h - 4:.1f}" text-anchor="middle">'
                    f"{_number(value)}</text>"
                )
        _week_label(parts, x, top + chart_height + 16, week)
    parts.append("</svg>")
    return "".join(parts) + _legend((names[j], colors[j]) for j in range(2))


def _analytics_sections(by_name: dict[str, Table]) -> list[tuple[str, str]]:
    """The charts and tables of the analytics sections (when the report has them)."""
    if HOURS not in by_name:
        return []
    period = by_name[PERIOD]
    since, until, interval, precision, zone = period.rows[0][:5]
    note = (
        f'<p class="muted">{cell(since)} to {cell(until)}, {html.escape(str(zone))} time '
        "(weeks from Monday). "
        "Start and end times are estimated from the exports and the run list, and are "
        f"{html.escape(precision)}"
        + (f" (exports here are {cell(interval)} h apart)" if interval else "")
        + ": see the nsml_run_timeline view for each run's bounds.</p>"
    )
    hours = by_name[HOURS]
    index = {c: i for i, c in enumerate(hours.columns)}
    gpu_known = any(row[index["gpu_hours"]] for row in hours.rows)
    measure = "gpu_hours" if gpu_known else "run_hours"
    per_week: dict[str, dict[str, float]] = defaultdict(dict)
    for row in hours.rows:
        project = cell(row[index["project_name"]]) or cell(row[index["project_id"]])
        per_week[cell(row[index["week"]])][project] = float(row[index[measure]] or 0)
    unknown = sum(float(row[index["run_hours_without_gpu_count"]]) for row in hours.rows)
    caveat = ""
    if not gpu_known:
        caveat = (
            '<p class="muted">No GPU counts are known, so this shows run-hours: set them '
            "with <code>nsml-etl gpu-servers set CODE GPUS</code>.</p>"
        )
    elif unknown:
        caveat = (
            f'<p class="muted">{unknown:.1f} run-hours on servers without a GPU count '
            "are not in these GPU-hours (see below).</p>"
        )
    waits = by_name[WAITS]
    all_waits = [(cell(r[0]), r[4], r[5]) for r in waits.rows if r[1] is None]
    rates = by_name[FAILURES["image"]]
    images = [(cell(r[0]) or "unknown", round(100 * float(r[3]), 1)) for r in rates.rows]
    title = "GPU-hours" if gpu_known else "Run-hours"
    return [
        (
            f"{title} per project per week",
            note
            + _stacked_columns(
                per_week,
                "GPU-hours" if gpu_known else "run-hours",
                "No run time in this period yet: it needs exports that saw runs start or end.",
            )
            + caveat
            + _note(hours),
        ),
        (
            "Queue wait per week (all projects)",
            _paired_columns(
                all_waits,
                "hours",
                ("median", "90th percentile"),
                "No queue waits in this period: they need runs seen waiting or running.",
            )
            + _note(waits),
        ),
        (
            "Failure rate by image (failed / finished)",
            (
                _bar_chart(images, "% failed", "%")
                if images
                else '<p class="muted">No finished runs in this period.</p>'
            )
            + _note(rates),
        ),
        *(
            (by_name[name].title, _html_table(by_name[name]))
            for name in (
                BY_PROJECT_HOURS,
                BY_CREATOR_HOURS,
                SERVERS,
                WEEKLY_FAILURES,
                FAILURES["gpu_server"],
                FAILURES["creator"],
                MISSING,
            )
        ),
    ]


def _html_table(table: Table) -> str:
    if not table.rows:
        return '<p class="muted">None.</p>'
    # Long column names may break after an underscore, never inside a word.
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in headers(table))
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>{_note(table)}"


def _headline(table: Table) -> str:
    """The numbers a team lead looks for first, as a row of cards."""
    values = dict(zip(table.columns, table.rows[0], strict=True)) if table.rows else {}
    last = values.get("last_successful_export")
    failed = values.get(f"failed_last_{RECENT_DAYS}_days") or 0
    cards = [
        ("", values.get("runs", 0), "runs"),
        ("", values.get("active_runs", 0), "active now"),
        (" alert" if failed else "", failed, f"failed in the last {RECENT_DAYS} days"),
        ("", values.get("projects", 0), "projects"),
        (" time", f"{cell(last)} UTC" if last else "never", "last successful export"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{css}"><b>{_esc(value)}</b>{html.escape(label)}</div>'
            for css, value, label in cards
        )
        + "</div>"
    )


def as_html(tables: list[Table], source: str) -> str:
    """The whole report as one page; ``source`` says where it was read from (never a URL:
    see :func:`describe_database`)."""
    by_name = {t.name: t for t in tables}

    def pairs(name: str, label: Any, value: str) -> list[tuple[str, float]]:
        table = by_name[name]
        index = {c: i for i, c in enumerate(table.columns)}
        return [(label(row, index), float(row[index[value]] or 0)) for row in table.rows]

    gpu = pairs(
        "nsml_gpu_usage", lambda r, i: cell(r[i["eng_full_name"]]) or "unknown", "active_runs"
    )
    images = pairs(
        "nsml_image_usage",
        lambda r, i: f"{cell(r[i['image_path']])} ({cell(r[i['image_type']])})",
        "runs",
    )
    creators = pairs(
        "nsml_creator_activity", lambda r, i: cell(r[i["creator"]]) or "unknown", "runs"
    )
    weekly: dict[str, dict[str, float]] = defaultdict(dict)
    for week, status, runs in by_name["nsml_runs_per_week"].rows:
        weekly[cell(week)][status or NO_STATUS] = float(runs)
    found = {s for counts in weekly.values() for s in counts}
    statuses = in_status_order(found)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        (
            by_name[BY_PROJECT].title,
            _project_bars(by_name[BY_PROJECT]) + _html_table(by_name[BY_PROJECT]),
        ),
        (
            "Runs created per week, by status",
            _stacked_columns(
                weekly,
                "runs",
                "No runs with a create time yet (export with --all).",
                status_color,
                statuses,
            )
            + _note(by_name["nsml_runs_per_week"]),
        ),
        (
            "Active runs by GPU server",
            _bar_chart([g for g in gpu if g[1] > 0], "active runs")
            + _note(by_name["nsml_gpu_usage"]),
        ),
        ("Top images", _bar_chart(images, "runs") + _note(by_name["nsml_image_usage"])),
        (
            "Busiest creators",
            _bar_chart(creators, "runs") + _note(by_name["nsml_creator_activity"]),
        ),
        ("Env keys in use", _html_table(by_name["nsml_env_key_catalog"])),
        ("Export freshness", _html_table(by_name["nsml_export_freshness"])),
        ("Recent status changes", _html_table(by_name["nsml_status_transitions"])),
    ]
    sections[2:2] = _analytics_sections(by_name)
    body = "".join(
        f"<section><h2>{html.escape(name)}</h2>{content}</section>" for name, content in sections
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_PAGE_TITLE}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_PAGE_TITLE}</h1><p class="muted">Generated {generated} by '
        f"nsml-etl from {html.escape(source)}. Times are UTC.</p>"
        f"{_headline(by_name[HEADLINE])}{body}"
        "</body></html>\n"
    )
