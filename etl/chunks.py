"""The pipeline's last stage: flattened runs gathered into chunks, each committed in one
transaction (:func:`write_chunk`: the schema step, then the upsert with its history).

:class:`ChunkWriter` writes a chunk again when its connection dropped (a transient error,
:func:`is_transient_db_error`), splits a chunk the database refuses for its data until the runs
at fault are found (each a failed pair with the database's reason; every other run is
written), and marks the stored runs that the API answered 404 for as gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from .clock import utc_now
from .errors import DatabaseError, MappingChanged
from .events import event
from .outcome import ExportReport, FailedPair
from .transform import FlatRun, env_keys, extra_fields
from .warehouse.batches import BatchLog
from .warehouse.failures import error_kind, first_line
from .warehouse.families import Family
from .warehouse.nodes import screen_nodes
from .warehouse.store import RunStore

log = logging.getLogger("nsml_etl.pipeline")  # its messages were the pipeline's

# A chunk whose connection dropped is written again at most this often, with a short backoff
# (a database restart or failover takes seconds, not minutes).
DB_WRITE_ATTEMPTS = 3
DB_RETRY_WAIT_S = 1.0
DB_RETRY_WAIT_MAX_S = 10.0
# Get run's answer for a run that no longer exists: a stored run answered so is marked gone.
GONE_STATUS = 404


def is_transient_db_error(exc: BaseException, store: RunStore | None = None) -> bool:
    """A dropped connection, a deadlock or a lock timeout: the chunk may simply be written again
    (one transaction, idempotent upsert). Data, constraint and limit errors never heal."""
    family = store.family if store is not None else Family()
    return error_kind(family, exc) == "transient"


def write_chunk(store: RunStore, runs: Sequence[FlatRun], batch_id: int | None = None) -> int:
    """Schema first (new env keys become columns), then one transaction for the upsert and
    the change history, which adopts whatever other exports changed in the mapping meanwhile.
    A mapped column found missing under the lock sends the chunk through the schema step
    again, as long as each time finds a newer mapping (a mapping only grows: that ends)."""
    if not runs:
        return 0
    keys, fields = env_keys(runs), extra_fields(runs)
    found: object = None
    while True:
        mapping = store.schema.prepare(keys, fields)
        try:
            return store.upsert(runs, mapping=mapping, batch_id=batch_id)
        except MappingChanged as changed:
            if changed.mapping == found:
                raise DatabaseError(
                    f"table {store.table_name} lacks a column its mapping names, and adding "
                    "it did not help; check the table's columns against nsml_env_columns "
                    "and nsml_field_columns"
                ) from None
            found = changed.mapping
            log.debug("a mapped column of %s is missing; adding it first", store.table_name)


def unique_runs(runs: Iterable[FlatRun]) -> list[FlatRun]:
    """One per pair: a replayed file may hold a run twice, and PostgreSQL refuses to update a
    row twice in one statement. The later response wins, as it would across chunks."""
    return list({run.pair: run for run in runs}.values())


class ChunkWriter:
    """Collects flattened runs and writes them ``chunk_size`` at a time into the report,
    reconnecting and retrying a chunk whose database connection dropped.

    One run never takes its chunk down: runs the database cannot store are refused before
    writing where that can be known (:meth:`RunStore.screen`), and a chunk the database
    refuses for its data is split in halves until the runs at fault are found; each of those
    is a failed pair with the database's reason, and every other run is written."""

    def __init__(
        self,
        store: RunStore,
        chunk_size: int,
        report: ExportReport,
        batch: BatchLog | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        # Set by a signal: a chunk being split stops there (splitting a chunk of refused runs
        # costs a transaction per run, which must not hold a stopping export for minutes).
        self.stop = stop
        self.chunk_size = chunk_size
        self.report = report
        self.batch = batch
        self.pending: list[FlatRun] = []
        # Set when a write failed: the runs in hand are not tried again by salvage().
        self.broken = False
        self.retrying = Retrying(
            stop=stop_after_attempt(DB_WRITE_ATTEMPTS),
            wait=wait_exponential(multiplier=DB_RETRY_WAIT_S, max=DB_RETRY_WAIT_MAX_S),
            retry=retry_if_exception(lambda exc: is_transient_db_error(exc, store)),
            before_sleep=self._log_retry,
            sleep=sleep,
            reraise=True,
        )

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "database write failed (%s); reconnecting, attempt %d of %d",
            exc,
            state.attempt_number + 1,
            DB_WRITE_ATTEMPTS,
        )

    def add(self, run: FlatRun) -> None:
        self.pending.append(run)
        if len(self.pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            if self.batch is not None:
                self._retry(self.batch.open)
            runs, refused = self.store.screen(unique_runs(self.pending))
            for run, reason in refused:
                self._fail(run, reason)
            for run, reason in screen_nodes(self.store.family, runs):
                self._fail(run, reason, of_nodes=True)
            written = self._write(runs)
        except BaseException:
            self.broken = True
            raise
        self.report.exported += written
        self.report.chunks += 1
        log.info(
            "committed chunk %d: %d runs (%d so far)",
            self.report.chunks,
            written,
            self.report.exported,
            extra=event(
                "chunk_committed",
                chunk=self.report.chunks,
                runs=written,
                total=self.report.exported,
            ),
        )
        self.pending.clear()

    def salvage(self) -> None:
        """After an error elsewhere (a bug, the archive, a progress callback) has stopped the
        work: commit the runs in hand, unless writing is what failed."""
        if self.broken or not self.pending:
            return
        try:
            self.flush()
        except Exception as exc:
            log.warning("the %d runs in hand were not committed: %s", len(self.pending), exc)

    def _retry(self, func: Callable[..., Any], *args: object) -> int:
        try:
            return self.retrying(func, *args)
        except DatabaseError as exc:
            if is_transient_db_error(exc, self.store):
                raise DatabaseError(
                    f"{exc} (gave up after {DB_WRITE_ATTEMPTS} attempts; "
                    f"{self.report.exported} runs committed before)"
                ) from exc
            raise

    def _write(self, runs: list[FlatRun], splitting: bool = False) -> int:
        """Write ``runs``; where the database refuses them for their data, write each half
        on its own, down to the single runs at fault."""
        if not runs:
            return 0
        if splitting and self.stop is not None and self.stop.is_set():
            self.report.unwritten += len(runs)
            log.warning(
                "stopping: %d runs of a refused chunk were not written (the next "
                "export fetches them again)",
                len(runs),
            )
            return 0
        try:
            return self._retry(
                write_chunk, self.store, runs, self.batch.id if self.batch is not None else None
            )
        except DatabaseError as exc:
            if error_kind(self.store.family, exc) != "data":
                raise
            if len(runs) == 1:
                self._fail(runs[0], f"{self.store.family.label} refused it: {first_line(exc)}")
                return 0
            log.debug(
                "chunk of %d runs refused (%s); writing its halves apart",
                len(runs),
                first_line(exc),
            )
            half = len(runs) // 2
            return self._write(runs[:half], True) + self._write(runs[half:], True)

    def _fail(self, run: FlatRun, reason: str, of_nodes: bool = False) -> None:
        where = f"{run.where}: " if run.where else ""
        failure = FailedPair(run.pair, where + reason, of_nodes=of_nodes, refused=not of_nodes)
        self.report.record_failure(failure)

    def mark_gone(self) -> None:
        """Stored runs that Get run answered with 404 are marked gone (``gone_at``); they
        stay failed pairs all the same."""
        gone = [
            f.pair
            for f in self.report.failed
            if f.status == GONE_STATUS and f.pair is not None and not f.of_nodes
        ]
        if gone:
            self._retry(self.store.mark_gone, gone, utc_now())
