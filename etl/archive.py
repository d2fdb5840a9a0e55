"""The raw archive: every Get-run response as received, one JSON object per line.

``export --save-raw FILE`` writes ``{"projectId": ..., "runName": ..., "fetchedAt": ...,
"response": <the body>}`` per run (``.gz`` compresses); with ``--nodes``, a run whose node list
was read to its end also has ``"nodeResponses": [<each page's body>, ...]``, so that ``load``
gives the same nodes as the export did (a run without it keeps its stored nodes). ``load FILE``
replays such a file, and also accepts plain run objects, one per line, exactly as Get run
returns them; their pair is then read from the body's ``projectId``/``runName``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gzip
import io
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from . import jsontext
from .clock import parse_moment
from .errors import InputError, OutputError
from .files import display_name, open_input, open_output, standard_input
from .pairs import STDIN_NAME, Pair, check_name, named_pair

log = logging.getLogger(__name__)

RESPONSE_KEY = "response"
NODE_RESPONSES_KEY = "nodeResponses"
FETCHED_AT_KEY = "fetchedAt"
GZIP_FIRST_BYTE = b"\x1f"
# Decompressed bytes read at a time (lines are split out of them).
GZIP_BLOCK = 1 << 16
# Said of an unusable last line that has no newline: the file was cut short while written.
TORN_LINE = "the file ends in the middle of this line (cut short while it was written?)"


class ArchiveWriter:
    """Appends responses from any worker thread, one complete line at a time.

    A write or the final flush that fails (a full disk: ENOSPC) is an :class:`OutputError`
    naming the file and the OS's words; nothing more is written after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Written in place as the responses come, a FIFO or device too (files.open_output): a
        # crash leaves every line written before it for load to replay.
        self._file = open_output(path, "--save-raw")
        self._handle: IO[bytes] = self._file
        if path.name.endswith(".gz"):
            self._handle = gzip.GzipFile(fileobj=self._file, mode="wb")  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._closed = False

    def _failed(self, exc: OSError) -> OutputError:
        code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
        words = exc.strerror or str(exc) or type(exc).__name__
        return OutputError(
            f"--save-raw {display_name(self.path)}: cannot write: {words}"
            f"{f' ({code})' if code else ''}; the export stopped, the runs it fetched are "
            "committed"
        )

    def write(
        self, pair: Pair, raw: bytes, fetched_at: datetime, node_pages: list[bytes] | None = None
    ) -> None:
        """One record holding the response's bytes as received (numbers as sent, too), and
        the node list's pages where given, on one line: a raw newline in valid JSON can only
        be whitespace."""
        head = jsontext.dumps(
            {
                "projectId": pair.project_id,
                "runName": pair.run_name,
                FETCHED_AT_KEY: fetched_at.isoformat(),
            }
        )
        nodes = b""
        if node_pages is not None:
            nodes = b"".join(
                (
                    b',"' + NODE_RESPONSES_KEY.encode() + b'":[',
                    b",".join(map(_one_line, node_pages)),
                    b"]",
                )
            )
        line = b"".join(
            (
                head[:-1].encode("utf-8", "surrogatepass"),
                b',"' + RESPONSE_KEY.encode() + b'":',
                _one_line(raw),
                nodes,
                b"}\n",
            )
        )
        with self._lock:
            if self._closed:
                return
            try:
                self._handle.write(line)
            except OSError as exc:
                self._closed = True  # the file is in an unknown state: write nothing more
                with contextlib.suppress(OSError), contextlib.closing(self._file):
                    self._handle.close()
                raise self._failed(exc) from exc

    def close(self) -> None:
        """Write what is buffered and close; once only (the export closes it before recording
        its batch, so that a failure here is recorded too)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with contextlib.closing(self._file):  # GzipFile leaves the file it was given open
                    self._handle.close()
            except OSError as exc:
                raise self._failed(exc) from exc


def _one_line(raw: bytes) -> bytes:
    return raw.strip().replace(b"\r", b" ").replace(b"\n", b" ")


class ArchivedRun(NamedTuple):
    source: str  # the file, for messages
    line: int
    pair: Pair | None
    body: Any
    fetched_at: datetime | None
    problem: str | None = None
    raw: bytes = b""  # the line, for exact_body
    # The node list's pages (parsed), where the record carries them (export --nodes).
    node_pages: list[Any] | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def exact_body(self) -> Any:
        """The body parsed again with every number's literal kept."""
        obj = jsontext.loads_exact(self.raw)
        return obj[RESPONSE_KEY] if RESPONSE_KEY in obj else obj


def _pair_from(obj: dict[str, Any], where: str) -> Pair | None:
    """The pair a line names, checked as a pairs file's are (:class:`InputError` saying why
    not); None when it names none."""
    pair = named_pair(obj)
    if pair is None:
        return None
    return Pair(
        check_name(pair.project_id, "projectId", where), check_name(pair.run_name, "runName", where)
    )


def _utc(text: Any) -> datetime | None:
    """An archive's fetchedAt as naive UTC, like every time we store; None when unusable."""
    if not isinstance(text, str):
        return None
    try:
        return parse_moment(text, FETCHED_AT_KEY)
    except (InputError, OverflowError):  # OverflowError: year 1 or 9999 beyond UTC's range
        return None


def iter_archive(path: str | os.PathLike[str]) -> Iterator[ArchivedRun]:
    """Each line of an archive or plain-runs file, or of stdin for ``-``; unusable lines come
    with a ``problem``. The file is opened here, so a missing one fails before any line is
    asked for (and before the caller touches a database)."""
    name = display_name(path)
    if name == "-":
        return _read_lines(STDIN_NAME, standard_input("archive"))
    return _read_lines(name, open_input(path, "file"), close=True)


def _read_lines(source: str, handle: IO[bytes], close: bool = False) -> Iterator[ArchivedRun]:
    # Gzip is recognized by its first byte, whatever the name: a JSON line cannot start with
    # 0x1f, and a pipe has no name to go by.
    with contextlib.ExitStack() as cleanup:
        if close:
            cleanup.enter_context(handle)
        try:
            reader: Any = handle if hasattr(handle, "peek") else io.BufferedReader(handle)
            if reader.peek(1)[:1] == GZIP_FIRST_BYTE:
                reader = _gzip_lines(source, cleanup.enter_context(gzip.GzipFile(fileobj=reader)))
            for line_no, raw in enumerate(reader, start=1):
                if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                if raw.isspace() or not raw:
                    continue
                record = _parse_line(source, line_no, raw)
                if record.problem is not None and not raw.endswith(b"\n"):
                    record = record._replace(problem=f"{record.problem}; {TORN_LINE}")
                yield record
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{source}: cannot read: {exc}") from None


def _gzip_lines(source: str, unzipped: gzip.GzipFile) -> Iterator[bytes]:
    """The lines of a gzip stream, each with its newline. A stream cut short (a full disk while
    it was written) ends with the part of its last line that it holds, which then fails alone
    as that line: everything before it is read (GzipFile's own line reading would raise
    EOFError and lose the lines still in its buffer)."""
    parts: list[bytes] = []  # the line being read, from more than one block
    while True:
        try:
            block = unzipped.read1(GZIP_BLOCK)  # one read: read() would lose it at EOFError
        except EOFError:
            log.warning("%s: the compressed file ends early (cut short?)", source)
            break
        if not block:
            break
        pieces = block.split(b"\n")
        if len(pieces) == 1:
            parts.append(block)
            continue
        yield b"".join([*parts, pieces[0], b"\n"])
        for piece in pieces[1:-1]:
            yield piece + b"\n"
        parts = [pieces[-1]] if pieces[-1] else []
    if parts:
        yield b"".join(parts)


def _parse_line(source: str, line_no: int, raw: bytes) -> ArchivedRun:
    try:
        obj = jsontext.loads(raw)
    except jsontext.TooDeep as exc:
        return ArchivedRun(source, line_no, None, None, None, f"{source}:{line_no}: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        return ArchivedRun(
            source, line_no, None, None, None, f"{source}:{line_no}: not valid JSON ({exc})"
        )
    if type(obj) is not dict:
        return ArchivedRun(
            source, line_no, None, None, None, f"{source}:{line_no}: expected a JSON object"
        )
    fetched_at = None
    if RESPONSE_KEY in obj:  # an archive record
        body = obj[RESPONSE_KEY]
        fetched_at = _utc(obj.get(FETCHED_AT_KEY))
    else:  # a plain run object
        body = obj
    where = f"{source}:{line_no}"
    try:
        pair = _pair_from(obj, where)
    except InputError as exc:
        return ArchivedRun(source, line_no, None, body, fetched_at, str(exc))
    if pair is None:
        return ArchivedRun(
            source,
            line_no,
            None,
            body,
            fetched_at,
            f"{source}:{line_no}: no projectId and runName to key the run by",
        )
    pages = obj.get(NODE_RESPONSES_KEY) if RESPONSE_KEY in obj else None
    return ArchivedRun(
        source,
        line_no,
        pair,
        body,
        fetched_at,
        raw=raw,
        node_pages=pages if isinstance(pages, list) else None,
    )
