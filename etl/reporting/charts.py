"""The report's SVG charts (bars, stacked and paired columns, their axes, labels and legends)
and the colours every chart shares: a status or a project has one colour on the whole page.
Pieces of HTML, no page: :mod:`etl.reporting.html` puts them together."""

from __future__ import annotations

import hashlib
import html
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ..transform import RUN_STATUSES
from .formats import cell, display_width, limit_note, printable, shorten_middle
from .report import (
    GONE,
    GONE_LABEL,
    NO_STATUS,
    Table,
    status_label,
)

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
STATUS_COLORS = {
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
    from :data:`STATUS_COLORS`, any other computed from its name as written, so a status
    called ``failed`` is not painted as ``RUN_STATE_FAILED``."""
    if status == NO_STATUS:
        return STATUS_COLORS["no_status"]
    if status in RUN_STATUSES:
        return STATUS_COLORS[status.removeprefix("RUN_STATE_").lower()]
    key = status
    hue = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") % 360
    return f"hsl({hue},55%,45%)"


# A chart's series of runs: a status, runs without one, or runs gone (deleted upstream), each
# its own key whatever the statuses are called (a status may be called "gone").
GONE_SERIES = "gone"
_NO_STATUS_SERIES = "none"
_STATUS_SERIES = "status:"


def run_series(status: str | None, gone: bool) -> str:
    if gone:
        return GONE_SERIES
    return _NO_STATUS_SERIES if status is None else _STATUS_SERIES + status


def series_status(series: str) -> str | None:
    """The status a series stands for; None for gone runs."""
    if series == GONE_SERIES:
        return None
    return NO_STATUS if series == _NO_STATUS_SERIES else series.removeprefix(_STATUS_SERIES)


def series_color(series: str) -> str:
    status = series_status(series)
    return _GONE_COLOR if status is None else status_color(status)


def series_label(series: str) -> str:
    """For the legend, in words (``in progress``, ``gone (deleted upstream)``)."""
    status = series_status(series)
    if status is None:
        return GONE_LABEL
    return "no status" if status == NO_STATUS else status_label(status)


def series_title(series: str) -> str:
    """For a part's hover text: the words, and the status as stored where it differs."""
    status, label = series_status(series), series_label(series)
    return label if status in (None, NO_STATUS, label) else f"{label} ({status})"


def esc(value: Any) -> str:
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


def table_note(table: Table) -> str:
    note = limit_note(table)
    return f'<p class="muted">{html.escape(note)}</p>' if note else ""


def bar_chart(items: list[tuple[str, float]], unit: str, suffix: str = "") -> str:
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


def project_bars(table: Table) -> str:
    """Runs per project as horizontal bars stacked by status (runs gone upstream last, in a
    part of their own), named and with the project id under the name, the count in each part
    wide enough and the total at the end."""
    if not table.rows:
        return '<p class="muted">No runs yet.</p>'
    series = [
        run_series(None, True) if column == GONE else run_series(table.labels[column], False)
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
                f'fill="{series_color(key)}"><title>{esc(name)} '
                f"({esc(project_id)}), {html.escape(printable(series_title(key)))}: "
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
    return "".join(parts) + _legend((printable(series_label(k)), series_color(k)) for k in shown)


# Room above a chart's top gridline: the unit, and under it the tallest column's total.
_TOP = 40
# Gridlines a y axis aims at: about five, so its top is at most one step above the data.
_GRIDLINES = 5


def axis_scale(value: float, whole: bool) -> tuple[float, float]:
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


def stacked_columns(
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
    scale = axis_scale(highest, whole)
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


def paired_columns(
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
    scale = axis_scale(max(max(v or 0 for v in r[1:]) for r in rows), False)
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
