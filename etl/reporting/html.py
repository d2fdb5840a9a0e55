"""The report as one self-contained HTML page: inline CSS and SVG charts, no CDN, no web fonts,
works offline. The page, its sections and tables here; the charts in :mod:`etl.reporting.charts`."""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from .charts import (
    GONE_SERIES,
    bar_chart,
    esc,
    paired_columns,
    project_bars,
    run_series,
    series_color,
    series_label,
    series_status,
    series_title,
    stacked_columns,
    table_note,
)
from .formats import cell, headers, printable
from .report import (
    ACTIVE,
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
            + stacked_columns(
                per_week,
                "GPU-hours" if gpu_known else "run-hours",
                "No run time in this period yet: it needs exports that saw runs start or end.",
            )
            + caveat
            + table_note(hours),
        ),
        (
            "Queue wait per week (all projects)",
            paired_columns(
                all_waits,
                "hours",
                ("median", "90th percentile"),
                "No queue waits in this period: they need runs seen waiting or running.",
            )
            + table_note(waits),
        ),
        (
            "Failure rate by image (failed / finished)",
            (
                bar_chart(images, "% failed", "%")
                if images
                else '<p class="muted">No finished runs in this period.</p>'
            )
            + table_note(rates),
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
            f'{esc(name)}<br><span class="muted">{esc(value["project_id"])}</span>',
            esc(value["run_name"]),
            html.escape(printable(status_label(status) if status is not None else "no status")),
            esc(value["creator"]),
            esc(value["eng_full_name"]),
            html.escape(running),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heading = "".join(f"<th>{h}</th>" for h in head)
    return (
        f"<table><tr>{heading}</tr>{''.join(body)}</table>"
        '<p class="muted">Running for: from the start the exports saw (see nsml_run_timeline, '
        "good to about one export interval) to when the report was made.</p>" + table_note(table)
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
            f'{esc(name)}<br><span class="muted">{esc(value["project_id"])}</span>',
            esc(value["run_name"]),
            f"{_status_words(value['previous_status'])} &rarr; {_status_words(value['status'])}",
            esc(value["changed_at"]),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heading = "".join(f"<th>{h}</th>" for h in ("project", "run", "change", "changed at (UTC)"))
    return f"<table><tr>{heading}</tr>{''.join(body)}</table>{table_note(table)}"


def _html_table(table: Table) -> str:
    if not table.rows:
        return '<p class="muted">None.</p>'
    # Long column names may break after an underscore, never inside a word.
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in headers(table))
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>{table_note(table)}"


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
            f'<div class="card{css}"><b>{esc(value)}</b>{html.escape(label)}</div>'
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
        weekly[cell(week)][run_series(status, bool(gone))] += float(runs)
    found = {s for counts in weekly.values() for s in counts}
    statuses = {status for s in found if (status := series_status(s)) is not None}
    order = [run_series(None if s == NO_STATUS else s, False) for s in in_status_order(statuses)]
    order += [GONE_SERIES] if GONE_SERIES in found else []
    generated = (now or datetime.now(UTC).replace(tzinfo=None)).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        (
            by_name[BY_PROJECT].title,
            project_bars(by_name[BY_PROJECT]) + _html_table(by_name[BY_PROJECT]),
        ),
        (by_name[ACTIVE].title, _active_runs(by_name[ACTIVE])),
        (
            "Runs created per week, by status",
            stacked_columns(
                weekly,
                "runs",
                "No runs with a create time yet (export with --all).",
                series_color,
                order,
                series_label,
                series_title,
            )
            + table_note(by_name["nsml_runs_per_week"]),
        ),
        (
            "Active runs by GPU server",
            bar_chart([g for g in gpu if g[1] > 0], "active runs")
            + table_note(by_name["nsml_gpu_usage"]),
        ),
        ("Top images", bar_chart(images, "runs") + table_note(by_name["nsml_image_usage"])),
        (
            "Busiest creators",
            bar_chart(creators, "runs") + table_note(by_name["nsml_creator_activity"]),
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
