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

from ..transform import RUN_STATUSES
from .formats import cell, display_width, headers, limit_note, printable, shorten_middle
from .report import (
    ACTIVE,
    BY_PROJECT,
    FAILURES,
    GONE,
    GONE_LABEL,
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
    status_label,
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
# Projects' colours (GPU-hours per project): none of them a status's, so a project is never
# read as "failed" or "completed".
_PROJECT_COLORS = (
    "#127a8a",
    "#a0612a",
    "#6e7f12",
    "#2c3e82",
    "#b0458c",
    "#4f8f5f",
    "#7a4a3a",
    "#5e6fa8",
)
# Bars that stand for no status and no project (images, creators, servers, waits).
_PLAIN = "#52677f"
_PLAIN_LIGHT = "#a9b7c6"
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
# Runs deleted upstream: whatever their last status, they are in none of the statuses' parts.
_GONE_COLOR = "#2b2b2b"
# Pixels a terminal cell's worth of text takes at the charts' 12px: a little more than the
# widest Latin fonts' average, so labels measured this way fit (CJK takes 2 cells, ~12px).
_CELL_PX = 7.2
# Widest label column of a chart, in pixels; longer labels keep their start and end.
_MAX_LABEL_PX = 380


def status_color(status: str) -> str:
    """The colour of a status, from its name alone: a documented one's (and runs without one)
    from :data:`_STATUS_COLORS`, any other computed from its name as written, so a status
    called ``failed`` is not painted as ``RUN_STATE_FAILED``."""
    if status == NO_STATUS:
        return _STATUS_COLORS["no_status"]
    if status in RUN_STATUSES:
        return _STATUS_COLORS[status.removeprefix("RUN_STATE_").lower()]
    key = status
    hue = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") % 360
    return f"hsl({hue},55%,45%)"


# A chart's series of runs: a status, runs without one, or runs gone (deleted upstream), each
# its own key whatever the statuses are called (a status may be called "gone").
_GONE_SERIES = "gone"
_NO_STATUS_SERIES = "none"
_STATUS_SERIES = "status:"


def _run_series(status: str | None, gone: bool) -> str:
    if gone:
        return _GONE_SERIES
    return _NO_STATUS_SERIES if status is None else _STATUS_SERIES + status


def _series_status(series: str) -> str | None:
    """The status a series stands for; None for gone runs."""
    if series == _GONE_SERIES:
        return None
    return NO_STATUS if series == _NO_STATUS_SERIES else series.removeprefix(_STATUS_SERIES)


def _series_color(series: str) -> str:
    status = _series_status(series)
    return _GONE_COLOR if status is None else status_color(status)


def _series_label(series: str) -> str:
    """For the legend, in words (``in progress``, ``gone (deleted upstream)``)."""
    status = _series_status(series)
    if status is None:
        return GONE_LABEL
    return "no status" if status == NO_STATUS else status_label(status)


def _series_title(series: str) -> str:
    """For a part's hover text: the words, and the status as stored where it differs."""
    status, label = _series_status(series), _series_label(series)
    return label if status in (None, NO_STATUS, label) else f"{label} ({status})"


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
            f'fill="{_PLAIN}"><title>{html.escape(printable(label))}: {value:g} {unit}'
            f'</title></rect><text x="{label_width + width + 6}" y="{y + 15}">'
            f"{value:g}{suffix}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _project_bars(table: Table) -> str:
    """Runs per project as horizontal bars stacked by status (runs gone upstream last, in a
    part of their own), named and with the project id under the name, the count in each part
    wide enough and the total at the end."""
    if not table.rows:
        return '<p class="muted">No runs yet.</p>'
    series = [
        _run_series(None, True) if column == GONE else _run_series(table.labels[column], False)
        for column in table.columns[3:]
    ]
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
        for key, count in zip(series, counts, strict=True):
            if not count:
                continue
            width = bar_width * count / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 6}" width="{width:.1f}" height="24" '
                f'fill="{_series_color(key)}"><title>{_esc(name)} '
                f"({_esc(project_id)}), {html.escape(printable(_series_title(key)))}: "
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
    shown = [k for i, k in enumerate(series) if any(row[3 + i] for row in table.rows)]
    return "".join(parts) + _legend((printable(_series_label(k)), _series_color(k)) for k in shown)


# Room above a chart's top gridline: the unit, and under it the tallest column's total.
_TOP = 40
# Gridlines a y axis aims at: about five, so its top is at most one step above the data.
_GRIDLINES = 5


def _scale(value: float, whole: bool) -> tuple[float, float]:
    """The y axis for data up to ``value``: a round step (1, 2, 2.5 or 5 times a power of
    ten; whole numbers when the data count things) and the top, the first step at or above
    ``value``, so the axis ends near the data (24 runs: 0 to 25, not 40)."""
    if value <= 0:
        return 1.0, 1.0
    rough = value / _GRIDLINES
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough * (1 - 1e-9))
    if whole:
        step = float(max(1, math.ceil(step)))
    return step, round(step * math.ceil(round(value / step, 9)), 9)


def _axis(
    parts: list[str],
    left: int,
    top: int,
    width: int,
    height: int,
    scale: tuple[float, float],
    unit: str,
) -> None:
    """A labelled gridline at every step of ``scale`` (step, top) from 0 to its top."""
    step, peak = scale
    for i in range(round(peak / step) + 1):
        value = round(step * i, 9)
        y = top + height - height * value / peak
        parts.append(
            f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#dde" /><text x="{left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:g}</text>'
        )
    parts.append(f'<text x="4" y="{top - 24}" class="muted">{html.escape(unit)}</text>')


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
    label_of: Callable[[str], str] = str,
    title_of: Callable[[str], str] | None = None,
) -> str:
    """Columns per week (``data``: week -> series -> value), stacked by series, with a y axis,
    each column's total above it, each part's value inside it when it is tall enough, and a
    legend (``label_of`` a series; ``title_of`` on hover, by default the label); by default the
    largest series at the bottom, in the projects' colours."""
    title_of = title_of or label_of
    totals: dict[str, float] = defaultdict(float)
    for values in data.values():
        for series, value in values.items():
            totals[series] += value
    if not data or not any(totals.values()):
        return f'<p class="muted">{html.escape(empty)}</p>'
    series_order = order or sorted(totals, key=lambda k: (-totals[k], k))
    if color_of is None:
        palette = {k: _PROJECT_COLORS[i % len(_PROJECT_COLORS)] for i, k in enumerate(series_order)}
        color_of = palette.__getitem__
    highest = max(sum(values.values()) for values in data.values())
    whole = all(float(v).is_integer() for values in data.values() for v in values.values())
    scale = _scale(highest, whole)
    peak = scale[1]
    left, top, chart_height = 60, _TOP, 220
    column = max(24, min(56, 640 // len(data)))
    width = column * len(data)
    parts = [
        f'<svg class="chart" role="img" width="{left + width + 40}" '
        f'height="{top + chart_height + _DATE_ROOM}">'
    ]
    _axis(parts, left, top, width, chart_height, scale, unit)
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
                f"{html.escape(printable(title_of(series)))}: {_number(value)} "
                f"{html.escape(unit)}"
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
    return "".join(parts) + _legend(
        (printable(label_of(k)), color_of(k)) for k in series_order if totals[k]
    )


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
    scale = _scale(max(max(v or 0 for v in r[1:]) for r in rows), False)
    peak = scale[1]
    left, top, chart_height = 60, _TOP, 200
    column = max(28, min(60, 640 // len(rows)))
    parts = [
        f'<svg class="chart" role="img" width="{left + column * len(rows) + 40}" '
        f'height="{top + chart_height + _DATE_ROOM}">'
    ]
    _axis(parts, left, top, column * len(rows), chart_height, scale, unit)
    colors = (_PLAIN, _PLAIN_LIGHT)
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
    since, until, interval, precision = period.rows[0]
    note = (
        f'<p class="muted">Weeks of {cell(since)} to {cell(until)} (Mondays, UTC). '
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
                SERVERS,
                WEEKLY_FAILURES,
                FAILURES["gpu_server"],
                FAILURES["creator"],
                MISSING,
            )
        ),
    ]


def _duration(hours: float) -> str:
    """How long, for people: ``45 min``, ``3 h 20 min``, ``2 d 4 h``."""
    minutes = round(hours * 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} d {minutes // 60 % 24} h"


def _active_runs(table: Table) -> str:
    """Each active run: its project (by name, the id under it), run, status, creator, server
    and how long it has run (or that it waits, since when)."""
    if not table.rows:
        return '<p class="muted">No active runs.</p>'
    head = ("project", "run", "status", "creator", "server", "running for")
    body = []
    for row in table.rows:
        value = dict(zip(table.columns, row, strict=True))
        name = cell(value["project_name"]) or cell(value["project_id"])
        hours = value["running_for_h"]
        if hours is None:
            created = value["created_at"]
            running = "waiting" + (f" since {cell(created)} UTC" if created else "")
        else:
            running = f"{_duration(float(hours))} (since {cell(value['started_at'])} UTC)"
        status = value["status"]
        cells = (
            f'{_esc(name)}<br><span class="muted">{_esc(value["project_id"])}</span>',
            _esc(value["run_name"]),
            html.escape(printable(status_label(status) if status is not None else "no status")),
            _esc(value["creator"]),
            _esc(value["eng_full_name"]),
            html.escape(running),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heading = "".join(f"<th>{h}</th>" for h in head)
    return (
        f"<table><tr>{heading}</tr>{''.join(body)}</table>"
        '<p class="muted">Running for: from the start the exports saw (see nsml_run_timeline, '
        "good to about one export interval) to when the report was made.</p>" + _note(table)
    )


def _status_words(status: Any) -> str:
    """A status in words, the status as stored on hover."""
    if status is None:
        return '<span class="muted">no status</span>'
    return (
        f'<span title="{html.escape(printable(str(status)))}">'
        f"{html.escape(printable(status_label(str(status))))}</span>"
    )


def _status_changes(table: Table) -> str:
    """Each change: the project by name (its id under it), the run, from which status to
    which, in words, and when."""
    if not table.rows:
        return '<p class="muted">None.</p>'
    body = []
    for row in table.rows:
        value = dict(zip(table.columns, row, strict=True))
        name = cell(value["project_name"]) or cell(value["project_id"])
        cells = (
            f'{_esc(name)}<br><span class="muted">{_esc(value["project_id"])}</span>',
            _esc(value["run_name"]),
            f"{_status_words(value['previous_status'])} &rarr; {_status_words(value['status'])}",
            _esc(value["changed_at"]),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heading = "".join(f"<th>{h}</th>" for h in ("project", "run", "change", "changed at (UTC)"))
    return f"<table><tr>{heading}</tr>{''.join(body)}</table>{_note(table)}"


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


def as_html(tables: list[Table], source: str, now: datetime | None = None) -> str:
    """The whole report as one page; ``source`` says where it was read from (never a URL:
    see :func:`describe_database`); ``now`` (naive UTC; default the system clock) is when it
    was made, as the report's clock has it."""
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
    weekly: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for week, status, gone, runs in by_name["nsml_runs_per_week"].rows:
        weekly[cell(week)][_run_series(status, bool(gone))] += float(runs)
    found = {s for counts in weekly.values() for s in counts}
    statuses = {status for s in found if (status := _series_status(s)) is not None}
    order = [_run_series(None if s == NO_STATUS else s, False) for s in in_status_order(statuses)]
    order += [_GONE_SERIES] if _GONE_SERIES in found else []
    generated = (now or datetime.now(UTC).replace(tzinfo=None)).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        (
            by_name[BY_PROJECT].title,
            _project_bars(by_name[BY_PROJECT]) + _html_table(by_name[BY_PROJECT]),
        ),
        (by_name[ACTIVE].title, _active_runs(by_name[ACTIVE])),
        (
            "Runs created per week, by status",
            _stacked_columns(
                weekly,
                "runs",
                "No runs with a create time yet (export with --all).",
                _series_color,
                order,
                _series_label,
                _series_title,
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
        ("Recent status changes", _status_changes(by_name["nsml_status_transitions"])),
    ]
    sections[3:3] = _analytics_sections(by_name)
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
