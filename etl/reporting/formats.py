"""The report's sections as text (columns aligned by display width), JSON (keyed by section
name) and CSV (one section per stream or file)."""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Any

from wcwidth import wcswidth, wcwidth

from ..errors import InputError
from ..files import writing
from .report import Table

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


def cell(value: Any) -> str:
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


def headers(table: Table) -> list[str]:
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
        names = headers(table)
        cells = [[shorten_middle(printable(cell(v)), max_width) for v in row] for row in table.rows]
        widths = [
            max(display_width(h), *(display_width(r[i]) for r in cells))
            for i, h in enumerate(names)
        ]
        for line in (names, *cells):
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


def csv_limit(limit: int | None) -> int:
    """Rows per table in CSV: every row (a file is data for a program, with no room for a
    "20 of 54" note) unless ``--limit`` says otherwise."""
    return 0 if limit is None else limit


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
    return cell(value) if isinstance(value, float) else value


def write_csv_files(tables: list[Table], directory: Path) -> list[Path]:
    """One ``NAME.csv`` per section in ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out-dir {directory}: {exc.strerror or exc}") from None
    paths = []
    for table in tables:
        path = directory / f"{table.name}.csv"
        with writing(path, "--out-dir") as handle:  # whole, or a FIFO in place
            handle.write(as_csv(table))
        paths.append(path)
    return paths


# -- HTML --------------------------------------------------------------------------------
