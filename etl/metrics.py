"""The metrics of one export or load, for monitoring: the report's ``metrics`` mapping and the
``--metrics-file`` that node_exporter's textfile collector reads.

:func:`recording` wraps a whole export or load. Whatever ends it (a report, an exception, an
interrupt), it works out the figures once, from what the run left behind: the exit code the CLI
ends with (an :class:`EtlError`'s, or the report's), the counts of the report, the responses the
API clients counted (:meth:`Recording.count_response`). A new outcome therefore needs nothing
here: it is a report's ``exit_code`` or an exception's. The file is rewritten atomically by
``prometheus_client.write_to_textfile`` (written aside, then renamed over), from a registry of
its own; one that cannot be written is a warning, never a failed run.

``nsml_etl_last_success_timestamp_seconds`` is now when the run succeeded; otherwise it is kept
from the previous file (same table and database), else read from ``nsml_export_batches`` (not
after a database error), else 0 (no success known: a staleness alert fires, as it should).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .clock import utc_now
from .config import Settings
from .errors import EXIT_SIGINT, DatabaseError, EtlError, InputError, error_exit_code
from .events import event
from .outcome import ExportReport, ProgressCallback

log = logging.getLogger(__name__)

PREFIX = "nsml_etl_"
# nsml_etl_runs{outcome=...}: what became of the runs of this run.
RUN_OUTCOMES = ("requested", "exported", "failed", "skipped", "not_attempted")
# nsml_etl_requests{status=...} of an attempt that got no HTTP response (refused, timed out).
NO_RESPONSE = "transport_error"
LAST_SUCCESS = "last_success_timestamp_seconds"


class Interrupt(threading.Event):
    """A ``stop`` event that knows the exit code it ends the run with: the CLI sets
    ``exit_code`` to 130 or 143 by the signal before setting the event. A plain
    ``threading.Event`` stops a run as SIGINT does (130)."""

    exit_code = EXIT_SIGINT


class Recording:
    """The figures of one run as it goes: the live report (seen through the progress callback,
    which the pipeline calls with it from the start) and the responses by HTTP status."""

    def __init__(self, settings: Settings, command: str, stop: threading.Event) -> None:
        self.settings = settings
        self.command = command
        self.stop = stop
        self.report: ExportReport | None = None
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._responses: Counter[str] = Counter()

    def count_response(self, status: int | None) -> None:
        """One attempt's answer, from any client thread; ``None``: no response at all."""
        with self._lock:
            self._responses[NO_RESPONSE if status is None else str(status)] += 1

    def watch(self, progress: ProgressCallback | None) -> ProgressCallback:
        """A progress callback that keeps the report, then calls ``progress``."""

        def watching(report: ExportReport) -> None:
            self.report = report
            if progress is not None:
                progress(report)

        return watching

    def figures(self, exit_code: int, database_failed: bool = False) -> dict[str, Any]:
        """The report's ``metrics``: each metric's value, named without the prefix. After a
        database failure the batch table is not read (an unreachable server would make the
        run wait for its connect timeout twice)."""
        report = self.report or ExportReport()
        done = report.exported + len(report.failed) + report.skipped
        succeeded = exit_code == 0 and not report.interrupted
        now = utc_now().replace(tzinfo=UTC).timestamp()
        with self._lock:
            responses = dict(sorted(self._responses.items()))
        return {
            "labels": self._labels(),
            "last_run_timestamp_seconds": now,
            LAST_SUCCESS: now if succeeded else self._last_success(not database_failed),
            "exit_code": exit_code,
            "duration_seconds": time.monotonic() - self.started,
            "runs": {
                "requested": report.requested,
                "exported": report.exported,
                "failed": len(report.failed),
                "skipped": report.skipped,
                "not_attempted": max(report.requested - done, 0),
            },
            "requests": responses,
            "retries": report.retried,
        }

    def exit_code(self, error: BaseException | None) -> int:
        """The exit code the CLI ends this run with."""
        if error is None:
            report = self.report or ExportReport()
            if report.interrupted:
                return self.stop.exit_code if isinstance(self.stop, Interrupt) else EXIT_SIGINT
            return report.exit_code
        if isinstance(error, KeyboardInterrupt):
            return EXIT_SIGINT
        return error_exit_code(error)  # as the CLI reads it: ours, the database's, or a bug

    def _last_success(self, read_batches: bool) -> float:
        path = self.settings.metrics_file
        kept = previous_value(Path(path), LAST_SUCCESS, self._labels()) if path else None
        if kept is not None:
            return kept
        return (self._last_success_from_batches() if read_batches else None) or 0.0

    def _labels(self) -> dict[str, str]:
        from .urls import redact_url  # local: SQLAlchemy is imported when a run starts

        return {"table": self.settings.table, "database": redact_url(self.settings.db_url)}

    def _last_success_from_batches(self) -> float | None:
        """When the last batch of this command and table succeeded; None when unknown (no
        such batch, or the database cannot say: this run may have failed on it)."""
        import sqlalchemy as sa

        from .tablenames import BATCHES_TABLE
        from .warehouse import READ, Warehouse
        from .warehouse.batches import SUCCEEDED

        try:  # read only: a SQLite file not made yet is refused, never created
            warehouse = Warehouse.open(self.settings.db_url, READ)
        except EtlError:
            return None
        batches = sa.table(
            BATCHES_TABLE,
            sa.column("finished_at", sa.DateTime()),
            sa.column("table_name"),
            sa.column("command"),
            sa.column("status"),
        )
        query = sa.select(sa.func.max(batches.c.finished_at)).where(
            batches.c.table_name == self.settings.table,
            batches.c.command == self.command,
            batches.c.status == SUCCEEDED,
        )
        try:
            with warehouse, warehouse.engine.connect() as conn:
                if not sa.inspect(conn).has_table(BATCHES_TABLE):
                    return None
                finished = conn.execute(query).scalar()
        except Exception as exc:  # best effort: the metrics must not fail the run
            log.debug("reading the last successful batch failed: %s", exc)
            return None
        if isinstance(finished, str):  # SQLite without type information
            finished = datetime.fromisoformat(finished)
        return finished.replace(tzinfo=UTC).timestamp() if finished is not None else None


def previous_value(path: Path, name: str, labels: dict[str, str]) -> float | None:
    """The value of ``PREFIX + name`` with ``labels`` in a metrics file; None if there is none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == PREFIX + name and sample.labels == labels:
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # no file yet, or not one of ours: as if there were none
    return None


def write_metrics_file(path: str, figures: dict[str, Any]) -> None:
    """``figures`` (:meth:`Recording.figures`) as gauges in the Prometheus text format,
    replacing ``path`` atomically; a warning if that fails."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile

    from .files import writing, written_in_place

    registry = CollectorRegistry(auto_describe=True)
    labels = figures["labels"]
    names = list(labels)

    def gauge(name: str, help: str, extra: str | None = None) -> Gauge:
        return Gauge(PREFIX + name, help, [*names, *([extra] if extra else [])], registry=registry)

    scalars = {
        "last_run_timestamp_seconds": "When the last run ended (Unix time).",
        LAST_SUCCESS: "When a run last succeeded (exit 0), Unix time; 0 when none is known.",
        "exit_code": "Exit code of the last run (0 ok, 1 some runs failed, 3 auth, 4 database).",
        "duration_seconds": "How long the last run took.",
        "retries": "Requests the last run sent again.",
    }
    for name, help in scalars.items():
        gauge(name, help).labels(**labels).set(figures[name])
    runs = gauge("runs", "Runs of the last run by what became of them.", "outcome")
    for outcome in RUN_OUTCOMES:
        runs.labels(**labels, outcome=outcome).set(figures["runs"][outcome])
    requests = gauge("requests", "API responses of the last run by HTTP status.", "status")
    for status, count in figures["requests"].items():
        requests.labels(**labels, status=status).set(count)
    try:
        if written_in_place(path):  # a FIFO or device, as every output: never replaced
            with writing(path, "--metrics-file") as handle:
                handle.write(generate_latest(registry).decode("utf-8"))
        else:
            write_to_textfile(os.path.realpath(path), registry)  # a symlink's target; it stays
    except (OSError, InputError) as exc:
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        log.warning(
            "could not write the metrics file %s: %s; the run itself is not affected",
            path,
            reason,
            extra=event("metrics_file_failed", path=path, reason=reason),
        )


@contextlib.contextmanager
def recording(
    settings: Settings, command: str, stop: threading.Event, *, enabled: bool = True
) -> Iterator[Recording]:
    """Record the run inside: at its end, whatever ends it, set the report's ``metrics`` and
    write ``settings.metrics_file`` (when given). ``enabled=False`` (a dry run) does neither."""
    run = Recording(settings, command, stop)
    error: BaseException | None = None
    try:
        yield run
    except BaseException as exc:
        error = exc
        raise
    finally:
        if enabled:
            _finish(run, error)


def _finish(run: Recording, error: BaseException | None) -> None:
    report = getattr(error, "report", None) if error is not None else None
    if isinstance(report, ExportReport):  # an AuthenticationError carries its report
        run.report = report
    figures = run.figures(run.exit_code(error), isinstance(error, DatabaseError))
    if run.report is not None:
        run.report.metrics = figures
    if run.settings.metrics_file:
        write_metrics_file(run.settings.metrics_file, figures)
