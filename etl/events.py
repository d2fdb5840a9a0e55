"""Structured log events: the ``nsml_etl`` loggers' records with an event name and fields, and
how they are printed (text for people, one JSON object per line for log shippers)."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from datetime import UTC, datetime
from typing import Any


def event(name: str, **fields: object) -> dict[str, Any]:
    """``extra=`` for a log call that is also a structured event (see ``--log-format json``)."""
    return {"event": name, "fields": fields}


def json_line(
    level: str, name: str, message: str, *, created: float | None = None, **fields: object
) -> str:
    """One event as a JSON object on one line: time, level, event name, message, its fields.
    The CLI writes its own events (errors, a dry run's plan) with it, as the formatter does."""
    moment = datetime.fromtimestamp(time.time() if created is None else created, UTC)
    payload = {
        "time": moment.isoformat(timespec="milliseconds"),
        "level": level,
        "event": name,
        "message": message,
        **fields,
    }
    return json.dumps(payload, ensure_ascii=False, default=str)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time, level, event name, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json_line(
            record.levelname.lower(),
            getattr(record, "event", "log"),
            record.getMessage(),
            created=record.created,
            **fields,
        )


class _PrintedByTheCli(logging.Filter):
    """Text mode: the CLI prints the summary on stdout and lists the failed pairs above it, so
    their records would say it twice; -v still logs each failed pair as it happens."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(record, "event", None)
        return not (name == "batch_finished" or (name == "pair_failed" and not self.verbose))


def _warning_as_event(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` in JSON mode: a library's Python warning (SQLAlchemy's about a
    URL option it ignores, ...) is a ``log`` event, not two lines of text on stderr."""
    logging.getLogger("nsml_etl.warnings").warning("%s: %s", category.__name__, message)


def setup_logging(verbose: bool, quiet: bool, log_format: str = "text") -> None:
    """Print the ``nsml_etl`` loggers' records on stderr, as text or as JSON lines."""
    root = logging.getLogger("nsml_etl")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
        level = logging.DEBUG if verbose else logging.INFO  # events are the point of json
        warnings.showwarning = _warning_as_event  # the CLI owns its process's stderr
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_PrintedByTheCli(verbose))
        level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
