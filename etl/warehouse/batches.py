"""Bookkeeping of exports: ``nsml_export_batches`` and ``nsml_export_failures``.

A batch row is written just before the first chunk commits (status ``running``), so an export
killed mid-way leaves a visible ``running`` row, and completed when the export ends, whatever
ends it, together with one failure row per failed pair: its status and error are the report's
outcome (:func:`nsml_etl.outcome.outcome_of`), as are the exit code and the summary. An export
that fails authentication before writing anything writes no batch either: a 401 leaves the
database untouched. One that stops on an error (a database or archive error, a bug) is
``failed``, with the message in ``error``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ..clock import utc_now
from ..errors import DatabaseError
from ..outcome import (  # noqa: F401 - the statuses are read from here too
    AUTH_FAILED,
    BATCH_STATUSES,
    FAILED,
    INTERRUPTED,
    PARTIAL,
    RUN_LIST_FAILED,
    RUNNING,
    SUCCEEDED,
    ExportReport,
)
from .failures import first_line
from .schema import Schema

log = logging.getLogger("nsml_etl.batches")  # its name before the sub-packages

# What made a batch (its command column).
BATCH_COMMANDS = EXPORT_COMMAND, LOAD_COMMAND = ("export", "load")
# Longest error message kept in nsml_export_batches.error.
MAX_ERROR_CHARS = 2000


class BatchLog:
    """The batch row of one export or load (``options`` must already be free of secrets), in
    the bookkeeping tables of ``schema`` (which creates them)."""

    def __init__(self, schema: Schema, command: str, options: dict[str, Any]) -> None:
        self.schema = schema
        self.command = command
        self.options = json.dumps(options, ensure_ascii=False, default=str, sort_keys=True)
        self.started_at = utc_now()
        self.id: int | None = None

    def open(self) -> None:
        """Insert the ``running`` row once; called before the first chunk is written."""
        if self.id is not None:
            return
        self.schema.prepare(set(), set())  # creates the bookkeeping tables under the lock
        table = self.schema.batches_table
        try:
            with self.schema.engine.begin() as conn:
                result = conn.execute(
                    sa.insert(table).values(
                        table_name=self.schema.table_name,
                        command=self.command,
                        started_at=self.started_at,
                        status=RUNNING,
                        options=self.options,
                    )
                )
                key = result.inserted_primary_key
                assert key is not None  # a single-row INSERT always has one
                self.id = int(key[0])
        except SQLAlchemyError as exc:
            raise DatabaseError(f"recording the batch failed: {first_line(exc)}") from exc

    def finish(self, report: ExportReport) -> None:
        """Complete the row with the report's outcome and record the failed pairs, in one
        transaction.

        When an error already stops the export (``report.error``), this is best effort: if the
        database cannot take the row either, it stays as it was (``running``, or not written)
        and the error that stopped the export is what the caller sees."""
        if report.auth_error is not None and self.id is None:
            return  # nothing was written in this export, and nothing will be
        try:
            self.open()
            self._complete(report)
        except DatabaseError as exc:
            if report.error is None:
                raise
            log.warning("could not record batch %s as failed: %s", self.id, exc)

    def _complete(self, report: ExportReport) -> None:
        outcome = report.outcome
        counts = {
            "finished_at": utc_now(),
            "status": outcome.status,
            "requested": report.requested,
            "exported": report.exported,
            "failed": len(report.failed),
            "retried": report.retried,
        }
        clean = self.schema.family.clean_text  # a failed run's name may hold what failed it
        if outcome.error is not None:
            counts["error"] = clean(outcome.error[:MAX_ERROR_CHARS])
        failures = [
            {
                "batch_id": self.id,
                "project_id": clean(f.pair.project_id) if f.pair else None,
                "run_name": clean(f.pair.run_name) if f.pair else None,
                "http_status": f.status,
                "error_code": clean(f.error_code),
                "message": clean(f.reason),
                "attempts": f.attempts,
            }
            for f in report.failed
        ]
        batches, failures_table = self.schema.batches_table, self.schema.failures_table
        try:
            with self.schema.engine.begin() as conn:
                conn.execute(sa.update(batches).where(batches.c.id == self.id).values(**counts))
                if failures:
                    conn.execute(sa.insert(failures_table), failures)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"recording the batch failed: {first_line(exc)}") from exc
        log.debug("batch %s recorded as %s", self.id, outcome.status)
