"""The raw archive: every Get-run response as received, one JSON object per line.

``export --save-raw FILE`` writes ``{"projectId": ..., "runName": ..., "fetchedAt": ...,
"response": <the body>}`` per run (``.gz`` compresses). ``load FILE`` replays such a file, and
also accepts plain run objects, one per line, exactly as Get run returns them; their pair is
then read from the body's ``projectId``/``runName``.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .errors import InputError
from .pairs import Pair

RESPONSE_KEY = "response"
FETCHED_AT_KEY = "fetchedAt"


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


class ArchiveWriter:
    """Appends responses from any worker thread, one complete line at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self._handle = _open(path, "wb")
        except OSError as exc:
            raise InputError(f"--save-raw {path}: cannot write: {exc.strerror}") from None
        self._lock = threading.Lock()

    def write(self, pair: Pair, body: Any, fetched_at: datetime) -> None:
        record = {
            "projectId": pair.project_id,
            "runName": pair.run_name,
            FETCHED_AT_KEY: fetched_at.isoformat(),
            RESPONSE_KEY: body,
        }
        line = json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
        with self._lock:
            self._handle.write(line)

    def close(self) -> None:
        self._handle.close()


@dataclass(frozen=True)
class ArchivedRun:
    where: str  # FILE:LINE, for messages
    pair: Pair | None
    body: Any
    fetched_at: datetime | None
    problem: str | None = None


def _pair_from(obj: dict) -> Pair | None:
    project_id, run_name = obj.get("projectId"), obj.get("runName")
    if isinstance(run_name, int) and not isinstance(run_name, bool):
        run_name = str(run_name)
    if isinstance(project_id, str) and project_id and isinstance(run_name, str) and run_name:
        return Pair(project_id, run_name)
    return None


def iter_archive(path: Path) -> Iterator[ArchivedRun]:
    """Each line of an archive or plain-runs file; unusable lines come with a ``problem``."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with _open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                yield _parse_line(f"{path}:{line_no}", raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None


def _parse_line(where: str, raw: bytes) -> ArchivedRun:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return ArchivedRun(where, None, None, None, f"{where}: not valid JSON ({exc})")
    if not isinstance(obj, dict):
        return ArchivedRun(where, None, None, None, f"{where}: expected a JSON object")
    fetched_at = None
    if RESPONSE_KEY in obj:  # an archive record
        body = obj[RESPONSE_KEY]
        try:
            fetched_at = datetime.fromisoformat(obj[FETCHED_AT_KEY])
        except (KeyError, TypeError, ValueError):
            fetched_at = None
    else:  # a plain run object
        body = obj
    pair = _pair_from(obj)
    if pair is None:
        return ArchivedRun(where, None, body, fetched_at,
                           f"{where}: no projectId and runName to key the run by")
    return ArchivedRun(where, pair, body, fetched_at)
