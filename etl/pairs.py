"""Pairs: which (projectId, runName) runs to export, read and validated from pairs files and
Python values, held for an export (:class:`PairSet`), and written back as
pairs files.

Formats: CSV with a header row, or JSON Lines (by extension ``.jsonl``/``.ndjson``, or sniffed
when reading stdin). Column names ``project_id``/``projectId`` and ``run_name``/``runName``;
other columns are ignored. Values are kept as text exactly as written. A UTF-8 BOM and CRLF line
endings are accepted. Every problem is an :class:`InputError` worded ``FILE:LINE: what``; a
file with several bad lines is one :class:`BadLinesError` listing them (the reading goes on past
a bad line, but not past a missing header, a NUL byte or an overlong line: the wrong file).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from .errors import BadLinesError, InputError
from .files import display_name, open_input, standard_input, writing
from .model import Pair

PROJECT_KEYS = ("project_id", "projectId")
RUN_KEYS = ("run_name", "runName")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
STDIN_NAME = "<stdin>"
# Bytes of stdin held in memory before spooling to a temporary file.
STDIN_SPOOL_BYTES = 8 * 1024 * 1024
# Distinct pairs kept in memory before they move to a temporary SQLite file (~25 MB of them).
SPILL_AFTER = 100_000
SPILL_BATCH = 10_000
# No real pairs line comes near this; a longer one is a wrong file, not a pair.
MAX_LINE_BYTES = 1024 * 1024
# Characters of a malformed pair given in Python shown in its error message.
MAX_SHOWN_ITEM = 80
# Bad lines of a pairs file shown at once: enough to see what is wrong with the file, few
# enough to read; the others are counted.
MAX_BAD_LINES = 20

# What to do with a bad line: record it and go on (collect_pairs), or None to raise it.
OnBadLine = Callable[[InputError], None] | None


def name_as_text(value: object) -> object:
    """A name as text where the API or a file sent a JSON number (run names are numbers in
    NSML: ``3`` means ``"3"``); any other value as it is, for the caller to judge."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def named_pair(obj: Mapping[str, object]) -> Pair | None:
    """The pair a run object (a Get-run body, a run list entry, an archive record) names by its
    ``projectId`` and ``runName``, a numeric run name as text; None when it names none. Not
    checked: see :func:`check_name`."""
    project_id, run_name = obj.get("projectId"), name_as_text(obj.get("runName"))
    if isinstance(project_id, str) and project_id and isinstance(run_name, str) and run_name:
        return Pair(project_id, run_name)
    return None


def check_name(value: object, what: str, where: str) -> str:
    """A project id or run name: non-empty text without control characters or lone UTF-16
    surrogates (legal as JSON escapes; no database can store them); :class:`InputError`
    naming ``where`` otherwise."""
    # Nearly every name is short printable ASCII: one C-level test each (this runs per run of
    # a load; the character-by-character checks below cost 20 us a run).
    if (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and value.strip()
        and value not in (".", "..")
    ):
        return value
    if isinstance(value, bool) or value is None:
        raise InputError(f"{where}: {what} is {json.dumps(value)}, expected text")
    value = name_as_text(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: {what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: {what} is empty")
    if value in (".", ".."):
        raise InputError(f"{where}: {what} {value!r} is a relative path segment, not a name")
    bad = next((ch for ch in value if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise InputError(f"{where}: {what} {value!r} holds control character {bad!r}")
    if not value.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise InputError(f"{where}: {what} {value!r} holds a lone UTF-16 surrogate")
    return value


def _pick_column(names: list[str], choices: tuple[str, ...], where: str) -> str:
    present = [name for name in choices if name in names]
    if not present:
        raise InputError(
            f"{where}: missing column {' or '.join(choices)} (header has: "
            f"{', '.join(repr(n) for n in names) or 'nothing'})"
        )
    if len(present) > 1:
        raise InputError(f"{where}: both {present[0]} and {present[1]} columns; keep one")
    return present[0]


def _bad_line(problem: InputError, on_bad: OnBadLine) -> None:
    if on_bad is None:
        raise problem from None  # the decoder's or csv's own error says nothing more
    on_bad(problem)


def _check_text(
    handle: IO[bytes], name: str, on_bad: OnBadLine = None
) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) from a binary handle, refusing binary content and overlong
    lines with the line number where they occur, and skipping non-UTF-8 lines (``on_bad``)."""
    line_no = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        if b"\x00" in raw:  # checked first: a binary file is the likelier story
            raise InputError(f"{name}:{line_no}: NUL byte: this looks like a binary file")
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise InputError(f"{name}:{line_no}: line longer than {MAX_LINE_BYTES} bytes")
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            _bad_line(
                InputError(
                    f"{name}:{line_no}: not valid UTF-8 text (a binary file, or another encoding?)"
                ),
                on_bad,
            )
            continue
        yield line_no, line


def iter_csv(handle: IO[bytes], name: str, on_bad: OnBadLine = None) -> Iterator[tuple[int, Pair]]:
    header_read = False

    def on_bad_text(problem: InputError) -> None:
        # A bad line before the header stops the reading: nothing after it could be read right.
        _bad_line(problem, on_bad if header_read else None)

    lines = _check_text(handle, name, on_bad_text)
    line_numbers: list[int] = [0]
    # The first line of the record being read (a quoted field may span lines, and a line that
    # is not UTF-8 is skipped): the line a record's problem names.
    record_start: list[int | None] = [None]

    def tracked() -> Iterator[str]:
        for number, line in lines:
            line_numbers[0] = number
            if record_start[0] is None:
                record_start[0] = number
            yield line

    reader = csv.reader(tracked(), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise InputError(f"{name}: empty file; expected a header row with project_id,run_name")
        header_line = line_numbers[0]
        where = f"{name}:{header_line}"
        header = [cell.strip() for cell in header]
        project_col = header.index(_pick_column(header, PROJECT_KEYS, where))
        run_col = header.index(_pick_column(header, RUN_KEYS, where))
    except csv.Error as exc:
        raise InputError(f"{name}:{line_numbers[0]}: malformed CSV: {exc}") from None
    header_read = True
    while True:
        record_start[0] = None
        try:
            row = next(reader, None)
        except csv.Error as exc:  # the reader drops the record and goes on with the next line
            _bad_line(InputError(f"{name}:{line_numbers[0]}: malformed CSV: {exc}"), on_bad)
            continue
        if row is None:
            return
        start = record_start[0]
        assert start is not None  # set by the first line the reader took for this record
        where = f"{name}:{start}"
        if not any(cell.strip() for cell in row):
            continue  # blank line
        try:
            if len(row) <= max(project_col, run_col):
                missing = header[run_col] if len(row) > project_col else header[project_col]
                raise InputError(f"{where}: missing value for {missing}")
            pair = Pair(
                check_name(row[project_col], header[project_col], where),
                check_name(row[run_col], header[run_col], where),
            )
        except InputError as problem:
            _bad_line(problem, on_bad)
            continue
        yield start, pair


def iter_jsonl(
    handle: IO[bytes], name: str, on_bad: OnBadLine = None
) -> Iterator[tuple[int, Pair]]:
    for line_no, line in _check_text(handle, name, on_bad):
        if not line.strip():
            continue
        try:
            pair = _jsonl_pair(line, f"{name}:{line_no}")
        except InputError as problem:
            _bad_line(problem, on_bad)
            continue
        yield line_no, pair


def _jsonl_pair(line: str, where: str) -> Pair:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    keys = list(obj)
    project_key = _pick_column(keys, PROJECT_KEYS, where)
    run_key = _pick_column(keys, RUN_KEYS, where)
    return Pair(
        check_name(obj[project_key], project_key, where), check_name(obj[run_key], run_key, where)
    )


def _looks_like_jsonl(head: str) -> bool:
    return head.lstrip("\ufeff \t\r\n").startswith("{")


def iter_pairs(
    path: str | os.PathLike[str], stdin: IO[bytes] | None = None, on_bad: OnBadLine = None
) -> Iterator[tuple[int, Pair]]:
    """Yield (line, pair) from a file path, or ``-`` for stdin, validating as it goes: a bad
    line raises, or is passed to ``on_bad`` and skipped."""
    name = display_name(path)
    if name == "-":
        source = stdin if stdin is not None else standard_input("pairs file")
        spool = tempfile.SpooledTemporaryFile(max_size=STDIN_SPOOL_BYTES)
        shutil.copyfileobj(source, spool)
        spool.seek(0)
        head = codecs.decode(spool.read(4096), "utf-8", errors="ignore")
        spool.seek(0)
        parse = iter_jsonl if _looks_like_jsonl(head) else iter_csv
        with spool:
            yield from parse(spool, STDIN_NAME, on_bad)
        return
    parse = iter_jsonl if name.lower().endswith(JSONL_SUFFIXES) else iter_csv
    with open_input(path, "pairs file") as binary:
        yield from parse(binary, name, on_bad)


class PairSet:
    """Distinct pairs in first-seen order.

    Held in memory up to ``spill_after`` pairs, then moved to a temporary SQLite file, so a
    pairs file of any size costs disk rather than memory while every pair is still validated
    before the first request.
    """

    def __init__(self, spill_after: int = SPILL_AFTER) -> None:
        self._spill_after = spill_after
        self._memory: dict[Pair, None] = {}
        self._db: sqlite3.Connection | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._buffer: list[Pair] = []

    def add(self, pair: Pair) -> None:
        if self._db is None:
            self._memory.setdefault(pair)
            if len(self._memory) > self._spill_after:
                self._spill()
            return
        self._buffer.append(pair)
        if len(self._buffer) >= SPILL_BATCH:
            self._flush()

    def _spill(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nsml-etl-pairs-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "pairs.db")
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE pairs (seq INTEGER PRIMARY KEY, project_id TEXT, "
            "run_name TEXT, UNIQUE (project_id, run_name))"
        )
        self._buffer = list(self._memory)
        self._memory = {}
        self._flush()

    def _flush(self) -> None:
        assert self._db is not None
        self._db.executemany(
            "INSERT OR IGNORE INTO pairs (project_id, run_name) VALUES (?, ?)", self._buffer
        )
        self._buffer = []

    def __len__(self) -> int:
        if self._db is None:
            return len(self._memory)
        if self._buffer:
            self._flush()
        return self._db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]

    def __iter__(self) -> Iterator[Pair]:
        if self._db is None:
            yield from self._memory
            return
        if self._buffer:
            self._flush()
        cursor = self._db.execute("SELECT project_id, run_name FROM pairs ORDER BY seq")
        while rows := cursor.fetchmany(SPILL_BATCH):
            for row in rows:
                yield Pair(*row)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PairSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BadLines:
    """The bad lines of one file: the first MAX_BAD_LINES of them, and how many in all."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, problem: InputError) -> None:
        self.count += 1
        if len(self.shown) < MAX_BAD_LINES:
            self.shown.append(str(problem))

    def error(self, name: str) -> BadLinesError:
        return BadLinesError(
            f"{name}: {self.count} bad lines; fix them and run again",
            self.shown,
            self.count - len(self.shown),
        )


def collect_pairs(
    path: str | os.PathLike[str], stdin: IO[bytes] | None = None, spill_after: int = SPILL_AFTER
) -> PairSet:
    """Validate the whole file and return its distinct pairs; raises :class:`InputError`
    (with FILE:LINE) before returning anything, one :class:`BadLinesError` for all bad lines."""
    name = display_name(path)  # as iter_pairs names it in each line's message
    name = STDIN_NAME if name == "-" else name
    pairs = PairSet(spill_after)
    bad = _BadLines()
    try:
        try:
            for _line, pair in iter_pairs(path, stdin, bad.add):
                pairs.add(pair)
        except InputError as exc:  # one that stops the reading: reported with the others
            if not bad.count:
                raise
            bad.add(exc)
        if bad.count:
            raise bad.error(name)
        if not len(pairs):
            raise InputError(f"{name}: no pairs found")
    except BaseException:
        pairs.close()
        raise
    return pairs


def _given_pair(item: object, where: str) -> Pair:
    """One pair given as a Python value: a Pair or (project_id, run_name) tuple or list, or a
    mapping with the column names a pairs file accepts."""
    if isinstance(item, Mapping):
        keys = [key for key in item if isinstance(key, str)]
        project_key = _pick_column(keys, PROJECT_KEYS, where)
        run_key = _pick_column(keys, RUN_KEYS, where)
        return Pair(
            check_name(item[project_key], project_key, where),
            check_name(item[run_key], run_key, where),
        )
    if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
        shown = repr(item)
        shown = shown if len(shown) <= MAX_SHOWN_ITEM else shown[:MAX_SHOWN_ITEM] + "..."
        raise InputError(f"{where}: expected a (project_id, run_name) pair, got {shown}")
    return Pair(check_name(item[0], "project_id", where), check_name(item[1], "run_name", where))


def collect_given_pairs(items: Iterable[object]) -> PairSet:
    """Pairs given as Python values (see :func:`_given_pair`), checked as a pairs file's lines
    are: the whole iterable before returning, each problem an :class:`InputError` naming the
    item as ``pairs[INDEX]``."""
    pairs = PairSet()
    try:
        for index, item in enumerate(items):
            pairs.add(_given_pair(item, f"pairs[{index}]"))
        if not len(pairs):
            raise InputError("pairs: no pairs given")
    except BaseException:
        pairs.close()
        raise
    return pairs


def write_pairs_file(
    path: str | os.PathLike[str],
    rows: Iterable[Sequence[object]],
    extra_columns: Sequence[str] = (),
) -> int:
    """Write a pairs CSV that ``export --pairs`` reads back: project_id, run_name, then
    ``extra_columns`` (which it ignores). Each row is a pair followed by its extra values; None
    is an empty cell. A regular file appears whole or not at all, a FIFO or device is written
    in place (:func:`files.writing`). Returns the rows written."""
    with writing(path) as handle:
        count = write_pairs(handle, rows, extra_columns)
    return count


def write_pairs(
    handle: IO[str], rows: Iterable[Sequence[object]], extra_columns: Sequence[str] = ()
) -> int:
    """The pairs CSV of :func:`write_pairs_file` on an open text stream (``pairs --out -``:
    standard output), as the rows come. Returns the rows written."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["project_id", "run_name", *extra_columns])
    count = 0
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
        count += 1
    return count
