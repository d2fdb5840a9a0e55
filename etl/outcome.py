"""What an export or load did: counts, failed pairs, and the outcome they add up to.

:func:`outcome_of` is the one place that classifies a report: the batch row's status and error
(``nsml_export_batches``), the exit code, ``ExportReport.ok`` and the summary line are all read
from its :class:`Outcome`, so that none of them can tell another story than the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import (
    EXIT_AUTH_FAILED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SOME_FAILED,
    AuthenticationError,
    EtlError,
    QuotaExhausted,
    error_exit_code,
    error_words,
)
from .events import event, json_line
from .model import Pair
from .pairs import write_pairs_file

# The events of an export as a whole (a failed pair, the summary) keep the pipeline's logger.
log = logging.getLogger("nsml_etl.pipeline")

# The statuses of nsml_export_batches: ``running`` until the export ends, then its outcome's.
BATCH_STATUSES = (
    RUNNING,
    SUCCEEDED,
    PARTIAL,
    RUN_LIST_FAILED,
    AUTH_FAILED,
    INTERRUPTED,
    FAILED,
    QUOTA_EXHAUSTED,
) = (
    "running",
    "succeeded",
    "partial",
    "run_list_failed",
    "auth_failed",
    "interrupted",
    "failed",
    "quota_exhausted",
)


@dataclass(frozen=True)
class Outcome:
    """How an export or load ended: the batch ``status``, the ``exit_code`` (for an interrupt,
    130; the CLI says 143 for SIGTERM), a ``note`` ending the summary line and the batch row's
    ``error`` (why it did not succeed)."""

    status: str
    exit_code: int
    note: str | None = None
    error: str | None = None


def outcome_of(report: ExportReport) -> Outcome:
    """The outcome of ``report``, the first case that applies: an error stopped it (a database
    or file error, or a bug), the credentials were refused, it was interrupted, the API quota
    was spent, the run list broke off, some runs failed, or all landed. A new way to end is one
    more case here (and its status in BATCH_STATUSES)."""
    if report.error is not None:
        words = error_words(report.error)
        return Outcome(FAILED, error_exit_code(report.error), f"stopped: {words}", words)
    if report.auth_error is not None:
        words = str(report.auth_error)
        return Outcome(AUTH_FAILED, EXIT_AUTH_FAILED, "authentication failed", words)
    quota = None
    if report.quota_error is not None:
        left = report.left_undone()
        quota = (
            f"API quota exhausted: {left}; the next export after the quota resets continues "
            "(with --skip-finished)",
            f"{report.quota_error}; {left}",
        )
    if report.interrupted:  # a spent quota that came first is still said, and recorded
        note, error = quota or (None, None)
        return Outcome(
            INTERRUPTED, EXIT_SIGINT, f"interrupted; {note}" if note else "interrupted", error
        )
    if quota is not None:
        return Outcome(QUOTA_EXHAUSTED, EXIT_SOME_FAILED, *quota)
    if report.source_error is not None:
        words = str(report.source_error)
        return Outcome(
            RUN_LIST_FAILED,
            report.source_error.exit_code,
            f"the run list failed, so the runs it did not list were not exported ({words})",
            words,
        )
    if report.failed:
        return Outcome(PARTIAL, EXIT_SOME_FAILED)
    return Outcome(SUCCEEDED, EXIT_OK)


@dataclass(frozen=True)
class FailedPair:
    pair: Pair | None  # None: an archive line that names no pair
    reason: str
    status: int | None = None
    error_code: str | None = None
    attempts: int = 1
    # The run's node list failed (export --nodes): the run itself landed, and a 404 here
    # never marks it gone.
    of_nodes: bool = False
    # The database refused the run: it was fetched (or read), and not written.
    refused: bool = False

    @property
    def run_fetched(self) -> bool:
        """The run itself was fetched: this failure came after (its node list, the database),
        so the progress counts it once, with the fetched runs."""
        return self.of_nodes or self.refused

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
    # The API quota was spent: the export stopped asking. ``not_attempted`` counts the runs it
    # then left (pulled or given, not fetched: neither exported nor failed); with discovery,
    # ``list_unread`` says the rest of the run list was not read either.
    quota_error: QuotaExhausted | None = None
    not_attempted: int = 0
    list_unread: bool = False
    # What stopped the export or load before its end: a database or archive error, a bug, a
    # progress callback that raised. It is raised to the caller once the batch is recorded.
    error: BaseException | None = None
    interrupted: bool = False
    # Runs fetched (or read) but neither written nor failed: a stop came while their refused
    # chunk was being split.
    unwritten: int = 0
    batch_id: int | None = None  # the nsml_export_batches row, when one was written
    # Set by the Python API (etl/api.py): how the runs were chosen ("pairs", "all",
    # "projects"; "load"), the project ids asked for, whether finished runs were skipped, the
    # settings used, and for a dry run the first pairs it would fetch.
    mode: str | None = None
    projects: list[str] | None = None
    skip_finished: bool = False
    settings: Settings | None = None
    dry_run: bool = False
    preview: list[Pair] = field(default_factory=list)
    # The figures of the metrics file (nsml_etl.metrics), set when the run ends: each metric
    # named without its nsml_etl_ prefix, plus the labels; empty for a dry run.
    metrics: dict[str, Any] = field(default_factory=dict)
    # Once the runs are committed (etl/api.py): the reporting views it created (those that
    # were missing), why creating them failed (the runs and the batch row stand), and how many
    # GPU servers the runs table has runs on without a GPU count (None: not counted).
    views_created: int = 0
    views_error: str | None = None
    servers_without_gpus: int | None = None

    def record_failure(self, failure: FailedPair) -> None:
        self.failed.append(failure)
        log_failure(failure)

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self)

    @property
    def ok(self) -> bool:
        """Every requested run landed (or was skipped): nothing failed, the run list was read
        to its end, and the export was not interrupted nor stopped."""
        return self.outcome.status == SUCCEEDED

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
        return self.outcome.exit_code

    def left_undone(self) -> str:
        """What a spent quota left undone, for the summary and the batch row's error."""
        unread = " and the rest of the run list unread" if self.list_unread else ""
        return f"{self.not_attempted} runs not attempted{unread}"

    def failure_lines(self) -> list[str]:
        """The failed pairs for a person, one line each (``project<TAB>run<TAB>reason
        [attempts]``); a reason that several pairs share (an unreachable API fails every run
        alike) is said once, as a heading over its pairs, which then show only their attempts."""
        by_reason: dict[str, list[FailedPair]] = {}
        for failure in self.failed:
            by_reason.setdefault(failure.reason, []).append(failure)
        lines = [f"Failed pairs ({len(self.failed)}):"] if self.failed else []
        for reason, failures in by_reason.items():
            if len(failures) > 1:
                lines.append(f"  {len(failures)} pairs: {reason}")
                lines += [f"    {_pair_cell(f)}[{_attempts(f)}]" for f in failures]
            elif failures[0].pair is None:  # a load's line: its reason starts FILE:LINE
                lines.append(f"  {reason}")
            else:
                (failure,) = failures
                lines.append(f"  {_pair_cell(failure)}{reason} [{_attempts(failure)}]")
        return lines

    @property
    def node_lists_failed(self) -> int:
        """Failed pairs that are a node list's (export --nodes): their runs landed, so they
        are in ``exported`` too."""
        return sum(failure.of_nodes for failure in self.failed)

    @property
    def settled(self) -> int:
        """Requested runs done so far, each once (the progress bar's count): fetched (landed,
        refused, or landed with its node list failed), failed before it was fetched, or
        skipped. A run whose node list failed is one run, not two."""
        before_fetch = sum(not failure.run_fetched for failure in self.failed)
        return self.fetched + before_fetch + self.skipped

    def dry_run_text(self) -> str:
        """What a dry run would do, for a person: what it would fetch, from where, into which
        table, how, the first pairs and what it would skip; one line each."""
        settings = self.settings
        assert settings is not None  # the API sets it
        if self.mode != "pairs":
            which = (
                f"of projects {', '.join(self.projects)}" if self.projects else "the key can see"
            )
            lines = [
                f"Dry run: would discover the runs {which} through GET /projects/runs "
                f"at {settings.base_url}, and fetch each"
            ]
        else:
            lines = [f"Dry run: would fetch {self.requested} runs from {settings.base_url}"]
        lines += [
            f"  into table {settings.table} of {settings.public_dict()['db_url']} (reachable)",
            f"  concurrency {settings.concurrency}, timeout {settings.timeout}s, "
            f"max attempts {settings.max_attempts}, chunks of {settings.chunk_size}",
        ]
        lines += [f"  {pair.project_id}\t{pair.run_name}" for pair in self.preview]
        if self.requested > len(self.preview):
            lines.append(f"  ... and {self.requested - len(self.preview)} more")
        if self.skip_finished:
            lines.append(f"  skipping {self.skipped} runs already stored as finished")
        lines.append("No request sent, nothing written.")
        return "\n".join(lines)

    def dry_run_event(self) -> str:
        """What a dry run would do as one ``dry_run`` event (a JSON line, for a log shipper)."""
        settings = self.settings
        assert settings is not None  # the API sets it
        if self.mode != "pairs":
            message = "Dry run: would discover the runs through GET /projects/runs, and fetch each"
        else:
            message = f"Dry run: would fetch {self.requested} runs"
        return json_line(
            "info",
            "dry_run",
            message + "; no request sent, nothing written",
            mode=self.mode,
            requested=self.requested if self.mode == "pairs" else None,
            projects=self.projects or None,
            preview=[
                {"project_id": pair.project_id, "run_name": pair.run_name} for pair in self.preview
            ],
            more=max(self.requested - len(self.preview), 0),
            skipped=self.skipped if self.skip_finished else None,
            **settings.public_dict(),
        )

    def summary(self) -> str:
        """Its counts add up: exported + failed - the node lists among them + skipped + not
        attempted + not written = requested (a run whose node list failed is in both)."""
        note = self.outcome.note
        unwritten = f"; {self.unwritten} not written (stopped)" if self.unwritten else ""
        nodes = self.node_lists_failed
        of_nodes = f" ({nodes} of them node lists of runs that landed)" if nodes else ""
        return (
            f"Summary: exported {self.exported}, failed {len(self.failed)}{of_nodes}, "
            f"retried {self.retried}, elapsed {self.elapsed:.2f}s{unwritten}"
            f"{self._views_note()}{self._gpus_note()}{f'; {note}' if note else ''}"
        )

    def _views_note(self) -> str:
        if self.views_error is None:
            return ""
        return f"; the reporting views were not created ({self.views_error}): run nsml-etl views"

    def _gpus_note(self) -> str:
        count = self.servers_without_gpus
        if not count:
            return ""
        servers = "server has" if count == 1 else "servers have"
        return (
            f"; {count} {servers} no GPU count, so their GPU-hours are unknown: "
            "nsml-etl gpu-servers suggest proposes counts"
        )


def _pair_cell(failure: FailedPair) -> str:
    """``project<TAB>run<TAB>`` of a failure's pair; nothing for a load line that names none
    (its reason starts with FILE:LINE)."""
    if failure.pair is None:
        return ""
    return f"{failure.pair.project_id}\t{failure.pair.run_name}\t"


def _attempts(failure: FailedPair) -> str:
    return f"{failure.attempts} attempt{'s' if failure.attempts != 1 else ''}"


def log_failure(failure: FailedPair) -> None:
    pair = failure.pair
    log.warning(
        "pair failed: %s: %s",
        pair or "-",
        failure.reason,
        extra=event(
            "pair_failed",
            project_id=pair.project_id if pair else None,
            run_name=pair.run_name if pair else None,
            reason=failure.reason,
            status=failure.status,
            error_code=failure.error_code,
            attempts=failure.attempts,
        ),
    )


def log_finished(report: ExportReport) -> None:
    log.info(
        "%s",
        report.summary(),
        extra=event(
            "batch_finished",
            status=report.outcome.status,
            exported=report.exported,
            failed=len(report.failed),
            retried=report.retried,
            skipped=report.skipped,
            elapsed=round(report.elapsed, 3),
            chunks=report.chunks,
            interrupted=report.interrupted,
            unwritten=report.unwritten,
            batch_id=report.batch_id,
            auth_failed=report.auth_error is not None,
            quota_exhausted=report.quota_error is not None,
            not_attempted=report.not_attempted,
            views_created=report.views_created,
            views_error=report.views_error,
            servers_without_gpus=report.servers_without_gpus,
        ),
    )


ProgressCallback = Callable[[ExportReport], None]
