"""The `nsml-etl report` command: a summary read from the reporting views, as text, CSV, JSON or
one self-contained HTML page (inline CSS and SVG: no CDN, no web fonts, works offline).

Every section is a :class:`Table` with a name (the view it shows, e.g. ``nsml_gpu_usage``, or a
name of its own for what the report adds up: ``headline``, ``runs_by_project``, the analytics
sections): the keys of the JSON report, the names ``--view`` takes and the CSV files'
names. Times are UTC, shown to the second; a table cut short says how many rows it has."""

from __future__ import annotations

import csv
import difflib
import hashlib
import html
import io
import json
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from wcwidth import wcswidth, wcwidth

from .database import describe_database, sqlite_path
from .dialects import first_line
from .errors import DatabaseError, InputError
from .tablenames import BATCHES_TABLE, FILE_PREFIX, view_name
from .transform import RUN_FAILED, RUN_STATUSES
from .views import query_view


@dataclass(frozen=True)
class Section:
    name: str  # the view's file name: the same for every --table
    title: str
    order_by: str | None = None
    limit: int | None = None  # rows shown unless --limit says otherwise


SECTIONS = (
    Section("nsml_runs_by_project_status", "Runs by project and status", "runs DESC", 20),
    Section("nsml_active_runs", "Active runs", "create_time DESC, project_id, run_name", 20),
    Section("nsml_gpu_usage", "GPU servers", "runs DESC", 10),
    Section("nsml_image_usage", "Top images", "runs DESC", 10),
    Section("nsml_creator_activity", "Busiest creators", "runs DESC", 10),
    Section("nsml_env_key_catalog", "Env keys in use", "runs DESC, env_key", 20),
    Section("nsml_runs_per_week", "Runs created per week", "week, status", None),
    Section("nsml_status_transitions", "Recent status changes", "changed_at DESC", 20),
    Section("nsml_export_freshness", "Export freshness"),
)
# Sections the report computes from the views, by name (the analytics ones: etl/analytics.py).
HEADLINE = "headline"
HEADLINE_TITLE = "At a glance"
BY_PROJECT = "runs_by_project"
BY_PROJECT_TITLE = "Runs by project"
PROJECTS_SHOWN = 20  # projects in runs_by_project unless --limit says otherwise
PERIOD = "analytics_period"
HOURS = "run_hours_per_project"
SERVERS = "run_hours_per_gpu_server"
WAITS = "queue_wait_per_week"
WEEKLY_FAILURES = "failure_rate_per_week"
FAILURES = {
    "image": "failure_rate_by_image",
    "gpu_server": "failure_rate_by_gpu_server",
    "creator": "failure_rate_by_creator",
}
MISSING = "nsml_gpu_servers_without_count"
# Every section, in the report's order: what --view accepts.
SECTION_NAMES = (
    HEADLINE,
    BY_PROJECT,
    *(s.name for s in SECTIONS),
    PERIOD,
    HOURS,
    SERVERS,
    WAITS,
    WEEKLY_FAILURES,
    *FAILURES.values(),
    MISSING,
)
# "Failed in the last N days" in the headline.
RECENT_DAYS = 7
NO_STATUS = "(no status)"

# Columns that hold a moment (UTC); SQLite hands them over as text.
_TIME_SUFFIXES = ("_at", "_time", "_earliest", "_latest")
_TIME_COLUMNS = frozenset({"last_created", "last_seen", "last_successful_export"})
_TIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?")


def cap_for(default: int | None, limit: int | None) -> int | None:
    """Rows a table shows: its default, or ``--limit`` when given (0: all)."""
    return default if limit is None else (limit or None)


@dataclass
class Table:
    """One section: its rows (values tidied: times as UTC datetimes, decimals as numbers) and,
    when the rows were cut short, ``total``, how many there are."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple]
    total: int | None = None
    # What a column stands for where its name is short (runs_by_project: ``failed`` is
    # ``RUN_STATE_FAILED``), for the HTML page's labels and colours.
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        times = [_is_time_column(c) for c in self.columns]
        self.rows = [
            tuple(_tidy(v, t) for v, t in zip(row, times, strict=True)) for row in self.rows
        ]
        if self.total is None:
            self.total = len(self.rows)

    @property
    def cut(self) -> bool:
        return (self.total or 0) > len(self.rows)

    def limited(self, cap: int | None) -> Table:
        """The first ``cap`` rows (all when ``cap`` is None), remembering how many there are."""
        if cap is None or len(self.rows) <= cap:
            return self
        return Table(
            self.name, self.title, self.columns, self.rows[:cap], len(self.rows), self.labels
        )


def _is_time_column(name: str) -> bool:
    return name.endswith(_TIME_SUFFIXES) or name in _TIME_COLUMNS


def _tidy(value: Any, time_column: bool) -> Any:
    if isinstance(value, Decimal):  # PostgreSQL and MySQL sums and averages
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if time_column and isinstance(value, str) and _TIME_TEXT.fullmatch(value):
        return datetime.fromisoformat(value)
    return value


def section_name(name: str, table: str) -> str:
    """The section ``--view NAME`` asks for: a section's name, or ``table``'s own name of that
    view (``team_a__gpu_usage``); :class:`InputError` listing the names otherwise."""
    for known in SECTION_NAMES:
        if name in (known, view_name(table, known) if known.startswith(FILE_PREFIX) else known):
            return known
    close = difflib.get_close_matches(name, SECTION_NAMES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(f"--view: no section {name!r}; {hint}the sections: {', '.join(SECTION_NAMES)}")


def refuse_missing_sqlite_file(engine: Engine) -> None:
    """:class:`DatabaseError` (exit 4) for a SQLite file that does not exist, naming a file
    close to it: a command that reads never creates a database (connecting would)."""
    path = sqlite_path(engine.url)
    if path is None or path.exists():
        return
    siblings = [p.name for p in path.parent.glob(f"*{path.suffix}") if p.is_file()]
    near = difflib.get_close_matches(path.name, siblings, n=1)
    hint = (
        f"; did you mean {path.parent / near[0]}?"
        if near
        else "; check --db (export or load creates it)"
    )
    where = describe_database(engine.url)
    raise DatabaseError(f"no nsml-etl tables in {where}: the file does not exist{hint}")


def require_runs_table(engine: Engine, table: str) -> None:
    """:class:`DatabaseError` (exit 4) unless ``table`` exists: ``report`` and ``views`` read
    what ``export`` and ``load`` wrote, so a mistyped ``--db`` or ``--table`` must not pass for
    an empty database, nor create one (a SQLite file that does not exist is never opened)."""
    where = describe_database(engine.url)
    refuse_missing_sqlite_file(engine)
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
        raise DatabaseError(
            f"no table {table} in {where}; its nsml-etl tables: "
            f"{', '.join(others)} (choose one with --table)"
        )
    raise DatabaseError(
        f"no nsml-etl tables in {where}: check --db and --table, or run export or load first"
    )


def _count(engine: Engine, name: str) -> int:
    quote = engine.dialect.identifier_preparer.quote
    sql = f"SELECT COUNT(*) FROM {quote(name)}"  # noqa: S608 - a name from our own sql/ files
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def _read(engine: Engine, table: str, section: Section, limit: int | None) -> Table:
    name = view_name(table, section.name)
    cap = cap_for(section.limit, limit)
    columns, rows = query_view(engine, name, section.order_by, cap)
    total = _count(engine, name) if cap is not None and len(rows) >= cap else len(rows)
    return Table(section.name, section.title, columns, rows, total)


def collect(engine: Engine, table: str, limit: int | None, now: datetime) -> list[Table]:
    """The headline, runs by project and each view's section, read from ``table``'s own views;
    ``limit`` rows per table (None: each section's default; 0: all); ``now`` (naive UTC, the
    exporter's clock: :func:`etl.clock.utc_now`) is when "failed in the last 7 days" ends."""
    sections = [_read(engine, table, section, limit) for section in SECTIONS]
    by_name = {t.name: t for t in sections}
    projects = runs_by_project(query_view(engine, view_name(table, SECTIONS[0].name))[1])
    failed = _failed_since(engine, table, now - timedelta(days=RECENT_DAYS))
    freshness = by_name["nsml_export_freshness"]
    last_export = (
        freshness.rows[0][freshness.columns.index("last_successful_export")]
        if freshness.rows
        else None
    )
    headline = Table(
        HEADLINE,
        HEADLINE_TITLE,
        [
            "runs",
            "active_runs",
            f"failed_last_{RECENT_DAYS}_days",
            "projects",
            "last_successful_export",
        ],
        [
            (
                sum(row[2] for row in projects.rows),
                by_name["nsml_active_runs"].total,
                failed,
                len(projects.rows),
                last_export,
            )
        ],
    )
    return [headline, projects.limited(cap_for(PROJECTS_SHOWN, limit)), *sections]


def _status_column(status: str) -> str:
    """``RUN_STATE_COMPLETED`` -> ``completed``; runs without a status -> ``no_status``."""
    return "no_status" if status == NO_STATUS else status.removeprefix("RUN_STATE_").lower()


def _in_status_order(found: set[str]) -> list[str]:
    """The documented statuses among ``found`` in a run's order, then any others by name."""
    return [s for s in RUN_STATUSES if s in found] + sorted(found - set(RUN_STATUSES))


def runs_by_project(rows: Iterable[tuple]) -> Table:
    """One row per project (most runs first): its name and id, its runs, and its runs in each
    status (a column per status found; the documented ones in a run's order)."""
    counts: dict[Any, dict[str, int]] = defaultdict(dict)
    names: dict[Any, Any] = {}
    for project_id, project_name, status, runs in rows:
        status = status if status is not None else NO_STATUS
        counts[project_id][status] = counts[project_id].get(status, 0) + int(runs)
        names[project_id] = names.get(project_id) or project_name
    found = {s for per in counts.values() for s in per}
    statuses = _in_status_order(found)
    fixed = ["project_name", "project_id", "runs"]
    columns = [_status_column(s) for s in statuses]
    if len(set(columns)) < len(columns) or set(columns) & set(fixed):
        columns = statuses  # two statuses would share a short name: keep the names whole
    ordered = sorted(
        counts.items(),
        key=lambda item: (-sum(item[1].values()), str(names[item[0]] or ""), item[0]),
    )
    return Table(
        BY_PROJECT,
        BY_PROJECT_TITLE,
        fixed + columns,
        [
            (names[project], project, sum(per.values()), *(per.get(s, 0) for s in statuses))
            for project, per in ordered
        ],
        labels=dict(zip(columns, statuses, strict=True)),
    )


def _failed_since(engine: Engine, table: str, since: datetime) -> int:
    """Runs that ended FAILED at or after ``since``, by the timeline's estimate of their end."""
    timeline = sa.table(
        view_name(table, "nsml_run_timeline"), sa.column("final_status"), sa.column("ended_at")
    )
    query = sa.select(timeline.c.ended_at).where(timeline.c.final_status == RUN_FAILED)
    with engine.connect() as conn:
        ends = [_tidy(end, True) for end in conn.execute(query).scalars()]
    return sum(1 for end in ends if isinstance(end, datetime) and end >= since)


# -- text, CSV, JSON ----------------------------------------------------------------------

# Characters that would move the cursor or turn text around on a terminal: shown as escapes.
_BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    return f"\\u{ord(char):04x}" if ord(char) > 0xFF else f"\\x{ord(char):02x}"


def printable(text: str) -> str:
    """``text`` with control characters (and bidirectional overrides) as escapes."""
    return "".join(
        _escape(c) if unicodedata.category(c) == "Cc" or ord(c) in _BIDI_CONTROLS else c
        for c in text
    )


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes (East Asian wide characters two); ``text`` printable."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)


def shorten_middle(text: str, cells: int) -> str:
    """``text`` if it fits in ``cells``, else its start and end around "…" (both ends of a
    long label tell things apart: a registry's host and an image's tag)."""
    if display_width(text) <= cells:
        return text
    widths = [max(wcwidth(c), 0) for c in text]
    room, head, tail, used = cells - 1, 0, len(text), [0, 0]
    while head < tail:
        side = 0 if used[0] <= used[1] else 1
        width = widths[head] if side == 0 else widths[tail - 1]
        if sum(used) + width > room:
            break
        used[side] += width
        if side == 0:
            head += 1
        else:
            tail -= 1
    return text[:head] + "…" + text[tail:]


def _cell(value: Any) -> str:
    """A value for people: times to the second (UTC: the headers say so), floats rounded."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def _headers(table: Table) -> list[str]:
    """Column names, with "(UTC)" after those that hold times."""
    times = {i for row in table.rows for i, v in enumerate(row) if isinstance(v, datetime)}
    return [f"{c} (UTC)" if i in times else c for i, c in enumerate(table.columns)]


def limit_note(table: Table) -> str | None:
    """ "20 of 54 rows" for a table cut short, with how to see more; None otherwise."""
    if not table.cut:
        return None
    return f"{len(table.rows)} of {table.total} rows shown; --limit N for more, 0 for all"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def as_text(tables: list[Table], max_width: int = 40) -> str:
    """Each section as aligned columns (by display width: Korean takes two cells a character);
    cells wider than ``max_width`` cells keep their start and end."""
    out = []
    for table in tables:
        out.append(f"== {table.title} ({table.name})")
        if not table.rows:
            out.append("   (none)\n")
            continue
        headers = _headers(table)
        cells = [
            [shorten_middle(printable(_cell(v)), max_width) for v in row] for row in table.rows
        ]
        widths = [
            max(display_width(h), *(display_width(r[i]) for r in cells))
            for i, h in enumerate(headers)
        ]
        for line in (headers, *cells):
            out.append(
                ("   " + "  ".join(_pad(v, w) for v, w in zip(line, widths, strict=True))).rstrip()
            )
        note = limit_note(table)
        out.append(f"   ({note})\n" if note else "")
    return "\n".join(out)


def _data(value: Any) -> Any:
    """A value for a program: times as ISO 8601 in UTC (``Z``), to the second."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or Infinity
    return value


def _json_default(value: Any) -> Any:
    """Whatever else a driver returns (bytes, UUIDs, intervals, ...) as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def as_json(tables: list[Table]) -> str:
    """One object keyed by section name: its title, columns, rows (objects) and total_rows
    (more than the rows when cut short; then a note says so too)."""
    document = {}
    for table in tables:
        section: dict[str, Any] = {
            "title": table.title,
            "columns": table.columns,
            "rows": [dict(zip(table.columns, map(_data, row), strict=True)) for row in table.rows],
            "total_rows": table.total,
        }
        if table.cut:
            section["note"] = limit_note(table)
        document[table.name] = section
    return json.dumps(document, ensure_ascii=False, indent=2, default=_json_default)


def as_csv(table: Table) -> str:
    """One section as CSV: a header row, then its rows (times as ISO 8601 UTC)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow("" if v is None else _csv_value(v) for v in row)
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    value = _data(value)
    return _cell(value) if isinstance(value, float) else value


def write_csv_files(tables: list[Table], directory: Path) -> list[Path]:
    """One ``NAME.csv`` per section in ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for table in tables:
            path = directory / f"{table.name}.csv"
            path.write_text(as_csv(table), encoding="utf-8")
            paths.append(path)
    except OSError as exc:
        raise InputError(f"--out-dir {directory}: {exc.strerror or exc}") from None
    return paths


# -- HTML --------------------------------------------------------------------------------

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
    key = _status_column(status)
    if key in _STATUS_COLORS:
        return _STATUS_COLORS[key]
    hue = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") % 360
    return f"hsl({hue},55%,45%)"


def _esc(value: Any) -> str:
    return html.escape(printable(_cell(value)))


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
        [_cell(row[0]) for row in table.rows] + [_cell(row[1]) for row in table.rows]
    )
    parts = [
        f'<svg class="chart" role="img" width="{label_width + bar_width + 70}" '
        f'height="{row_height * len(table.rows) + 6}">'
    ]
    for i, (name, project_id, runs, *counts) in enumerate(table.rows):
        y = i * row_height + 4
        parts.append(
            _label(4, y + 14, _cell(name) or "(no name)", label_width - 12)
            + _label(4, y + 29, _cell(project_id), label_width - 12, "sub")
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
                f"{_cell(value)} {html.escape(unit)}</title></rect>"
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
        f'<p class="muted">Weeks of {_cell(since)} to {_cell(until)} (Mondays, UTC). '
        "Start and end times are estimated from the exports and the run list, and are "
        f"{html.escape(precision)}"
        + (f" (exports here are {_cell(interval)} h apart)" if interval else "")
        + ": see the nsml_run_timeline view for each run's bounds.</p>"
    )
    hours = by_name[HOURS]
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
    all_waits = [(_cell(r[0]), r[4], r[5]) for r in waits.rows if r[1] is None]
    rates = by_name[FAILURES["image"]]
    images = [(_cell(r[0]) or "unknown", round(100 * float(r[3]), 1)) for r in rates.rows]
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


def _html_table(table: Table) -> str:
    if not table.rows:
        return '<p class="muted">None.</p>'
    # Long column names may break after an underscore, never inside a word.
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in _headers(table))
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
        (" time", f"{_cell(last)} UTC" if last else "never", "last successful export"),
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
        "nsml_gpu_usage", lambda r, i: _cell(r[i["eng_full_name"]]) or "unknown", "active_runs"
    )
    images = pairs(
        "nsml_image_usage",
        lambda r, i: f"{_cell(r[i['image_path']])} ({_cell(r[i['image_type']])})",
        "runs",
    )
    creators = pairs(
        "nsml_creator_activity", lambda r, i: _cell(r[i["creator"]]) or "unknown", "runs"
    )
    weekly: dict[str, dict[str, float]] = defaultdict(dict)
    for week, status, runs in by_name["nsml_runs_per_week"].rows:
        weekly[_cell(week)][status or NO_STATUS] = float(runs)
    found = {s for counts in weekly.values() for s in counts}
    statuses = _in_status_order(found)
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
