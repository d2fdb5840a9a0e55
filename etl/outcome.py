"""What an export or load did: counts, failed pairs, and the exit code they add up to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import (
    EXIT_AUTH_FAILED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    AuthenticationError,
    EtlError,
)
from .events import log_failure
from .pairs import Pair, write_pairs_file


@dataclass(frozen=True)
class FailedPair:
    pair: Pair | None  # None: an archive line that names no pair
    reason: str
    status: int | None = None
    error_code: str | None = None
    attempts: int = 1

    @property
    def project_id(self) -> str | None:
        return self.pair.project_id if self.pair is not None else None

    @property
    def run_name(self) -> str | None:
        return self.pair.run_name if self.pair is not None else None


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
    # Set by the Python API (etl/api.py): how the runs were chosen ("pairs", "all",
    # "projects"; "load"), the settings used, and for a dry run the first pairs it would fetch.
    mode: str | None = None
    settings: Settings | None = None
    dry_run: bool = False
    preview: list[Pair] = field(default_factory=list)
    # The figures of the metrics file (nsml_etl.metrics), set when the run ends: each metric
    # named without its nsml_etl_ prefix, plus the labels; empty for a dry run.
    metrics: dict[str, Any] = field(default_factory=dict)

    def record_failure(self, failure: FailedPair) -> None:
        self.failed.append(failure)
        log_failure(failure)

    @property
    def ok(self) -> bool:
        """Every requested run landed (or was skipped): nothing failed, the run list was read
        to its end, and the export was not interrupted."""
        return self.exit_code == EXIT_OK and not self.interrupted

    def write_failures(self, path: str | Path) -> None:
        """The failed pairs as a pairs CSV (plus a reason column, which pairs files ignore),
        to retry them; lines of a load that name no pair are left out."""
        write_pairs_file(
            path,
            (
                (*failure.pair, failure.reason)
                for failure in self.failed
                if failure.pair is not None
            ),
            ["reason"],
        )

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
