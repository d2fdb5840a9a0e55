"""Read and validate pairs files: which (projectId, runName) pairs to export.

Formats: CSV with a header row, or JSON Lines (by extension ``.jsonl``/``.ndjson``, or sniffed
when reading stdin). Column names ``project_id``/``projectId`` and ``run_name``/``runName``;
other columns are ignored. Values are kept as text exactly as written. A UTF-8 BOM and CRLF line
endings are accepted. Every problem is an :class:`InputError` worded ``FILE:LINE: what``.
"""

from __future__ import annotations

import codecs
import csv
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

from .errors import InputError

PROJECT_KEYS = ("project_id", "projectId")
RUN_KEYS = ("run_name", "runName")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
STDIN_NAME = "<stdin>"
# Bytes of stdin held in memory before spooling to a temporary file.
STDIN_SPOOL_BYTES = 8 * 1024 * 1024
# No real pairs line comes near this; a longer one is a wrong file, not a pair.
MAX_LINE_BYTES = 1024 * 1024


class Pair(NamedTuple):
    project_id: str
    run_name: str

    def __str__(self) -> str:
        return f"{self.project_id}/{self.run_name}"


def _check_value(value: object, what: str, where: str) -> str:
    """A project id or run name: non-empty text without control characters."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"{where}: {what} is {json.dumps(value)}, expected text")
    if isinstance(value, int):
        value = str(value)  # JSON Lines may carry run names as numbers: 3 means "3"
    if not isinstance(value, str):
        raise InputError(f"{where}: {what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: {what} is empty")
    if value in (".", ".."):
        raise InputError(f"{where}: {what} {value!r} is a relative path segment, not a name")
    bad = next((ch for ch in value if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise InputError(f"{where}: {what} {value!r} holds control character {bad!r}")
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


def _check_text(handle: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) from a binary handle, refusing binary and non-UTF-8 content
    and overlong lines with the line number where they occur."""
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
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"{name}:{line_no}: not valid UTF-8 text (a binary file, or another encoding?)"
            ) from None
        yield line_no, line


def iter_csv(handle: IO[bytes], name: str) -> Iterator[tuple[int, Pair]]:
    lines = _check_text(handle, name)
    line_numbers: list[int] = [0]

    def tracked() -> Iterator[str]:
        for number, line in lines:
            line_numbers[0] = number
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
        next_start = line_numbers[0] + 1
        for row in reader:
            # A quoted field may span lines: report the line where the record starts.
            start, next_start = next_start, line_numbers[0] + 1
            where = f"{name}:{start}"
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= max(project_col, run_col):
                missing = header[run_col] if len(row) > project_col else header[project_col]
                raise InputError(f"{where}: missing value for {missing}")
            yield start, Pair(
                _check_value(row[project_col], header[project_col], where),
                _check_value(row[run_col], header[run_col], where),
            )
    except csv.Error as exc:
        raise InputError(f"{name}:{line_numbers[0]}: malformed CSV: {exc}") from None


def iter_jsonl(handle: IO[bytes], name: str) -> Iterator[tuple[int, Pair]]:
    for line_no, line in _check_text(handle, name):
        if not line.strip():
            continue
        where = f"{name}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        keys = list(obj)
        project_key = _pick_column(keys, PROJECT_KEYS, where)
        run_key = _pick_column(keys, RUN_KEYS, where)
        yield line_no, Pair(
            _check_value(obj[project_key], project_key, where),
            _check_value(obj[run_key], run_key, where),
        )


def _looks_like_jsonl(head: str) -> bool:
    return head.lstrip("\ufeff \t\r\n").startswith("{")


def iter_pairs(path: str | Path, stdin: IO[bytes] | None = None) -> Iterator[tuple[int, Pair]]:
    """Yield (line, pair) from a file path, or ``-`` for stdin, validating as it goes."""
    name = str(path)
    if name == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        spool = tempfile.SpooledTemporaryFile(max_size=STDIN_SPOOL_BYTES)
        shutil.copyfileobj(source, spool)
        spool.seek(0)
        head = codecs.decode(spool.read(4096), "utf-8", errors="ignore")
        spool.seek(0)
        parse = iter_jsonl if _looks_like_jsonl(head) else iter_csv
        with spool:
            yield from parse(spool, STDIN_NAME)  # type: ignore[arg-type]
        return
    file_path = Path(path)
    if file_path.is_dir():
        raise InputError(f"{name}: is a directory, expected a pairs file")
    parse = iter_jsonl if name.lower().endswith(JSONL_SUFFIXES) else iter_csv
    try:
        binary = open(file_path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise InputError(f"{name}: no such pairs file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read pairs file: {exc.strerror}") from None
    with binary:
        yield from parse(binary, name)


def read_pairs(path: str | Path, stdin: IO[bytes] | None = None) -> list[Pair]:
    """All distinct pairs in file order; raises :class:`InputError` before returning any."""
    unique: dict[Pair, None] = {}
    for _line, pair in iter_pairs(path, stdin):
        unique.setdefault(pair)
    if not unique:
        raise InputError(f"{STDIN_NAME if str(path) == '-' else path}: no pairs found")
    return list(unique)
