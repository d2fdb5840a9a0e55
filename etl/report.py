"""What an export or load did: counts, failed pairs, and the structured log events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import EXIT_AUTH_FAILED, EXIT_OK, EXIT_SOME_FAILED, AuthenticationError, EtlError
from .pairs import Pair

log = logging.getLogger("etl.pipeline")


@dataclass(frozen=True)
class FailedPair:
    pair: Pair | None  # None: an archive line that names no pair
    reason: str
    status: int | None = None
    error_code: str | None = None
    attempts: int = 1


@dataclass
class ExportReport:
    requested: int = 0
    fetched: int = 0
    exported: int = 0
    skipped: int = 0  # --skip-finished: stored as finished, not fetched
    failed: list[FailedPair] = field(default_factory=list)
    retried: int = 0
    elapsed: float = 0.0
    chunks: int = 0
    auth_error: AuthenticationError | None = None
    source_error: EtlError | None = None  # discovery stopped part-way
    interrupted: bool = False
    # Runs fetched (or read) but neither written nor failed: a stop came while their refused
    # chunk was being split.
    unwritten: int = 0
    batch_id: int | None = None  # the nsml_export_batches row, when one was written

    def record_failure(self, failure: FailedPair) -> None:
        self.failed.append(failure)
        log_failure(failure)

    @property
    def exit_code(self) -> int:
        if self.auth_error is not None:
            return EXIT_AUTH_FAILED
        if self.source_error is not None:
            return self.source_error.exit_code
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        unwritten = f"; {self.unwritten} not written (stopped)" if self.unwritten else ""
        return (
            f"Summary: exported {self.exported}, failed {len(self.failed)}, "
            f"retried {self.retried}, elapsed {self.elapsed:.2f}s{unwritten}"
        )


ProgressCallback = Callable[[ExportReport], None]


def event(name: str, **fields: object) -> dict:
    """``extra=`` for a log call that is also a structured event (see ``--log-format json``)."""
    return {"event": name, "fields": fields}


def log_failure(failure: FailedPair) -> None:
    pair = failure.pair
    log.info("pair failed: %s: %s", pair or "-", failure.reason,
             extra=event("pair_failed", project_id=pair.project_id if pair else None,
                         run_name=pair.run_name if pair else None, reason=failure.reason,
                         status=failure.status, error_code=failure.error_code,
                         attempts=failure.attempts))


def log_finished(report: ExportReport) -> None:
    log.info("%s", report.summary(),
             extra=event("batch_finished", exported=report.exported, failed=len(report.failed),
                         retried=report.retried, skipped=report.skipped,
                         elapsed=round(report.elapsed, 3),
                         chunks=report.chunks, interrupted=report.interrupted,
                         unwritten=report.unwritten,
                         batch_id=report.batch_id,
                         auth_failed=report.auth_error is not None))
