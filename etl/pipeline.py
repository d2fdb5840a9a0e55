"""pairs -> fetch -> transform -> load, in chunks; returns a report of what happened.

Fetching runs on ``concurrency`` worker threads, each with its own HTTP session; the calling
thread collects results and writes a chunk (one transaction) every ``chunk_size`` runs, so an
interrupted export keeps everything committed before. Authentication failures stop the export
at once and write nothing more; an interrupt (``stop`` event) and a spent API quota stop
fetching (requests in flight finish) and commit what was fetched.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import jsontext
from .archive import ArchivedRun, ArchiveWriter
from .chunks import ChunkWriter
from .clock import utc_now
from .config import Credentials, Settings
from .errors import (
    Aborted,
    AuthenticationError,
    EtlError,
    OutputError,
    QuotaExhausted,
    RunFetchFailed,
    RunShapeError,
)
from .events import event
from .model import Pair, RunToFetch
from .nodelist import flatten_pages
from .nsml.auth import NcpSignatureV2
from .nsml.client import NsmlClient
from .nsml.nodes import NodeList, fetch_node_list
from .nsml.throttle import QuotaGuard, Throttle
from .nsml.watchdog import Watchdog
from .outcome import ExportReport, FailedPair, ProgressCallback, log_finished
from .transform import (
    FlatRun,
    flatten_run,
)
from .warehouse import Warehouse
from .warehouse.batches import EXPORT_COMMAND, LOAD_COMMAND, BatchLog
from .warehouse.store import RunStore

log = logging.getLogger(__name__)

# Pairs queued per worker beyond the one it is fetching: keeps workers busy while the main
# thread writes a chunk, without reading the whole pairs list into futures.
QUEUE_PER_WORKER = 4
# What a fetch comes back with: the run, why it failed, or (--nodes) the run and why its node
# list failed.
Fetched = FlatRun | FailedPair | tuple[FlatRun, FailedPair]


class _Fetcher:
    """Per-thread clients sharing one signer, a retry counter and the abort flag."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        abort: threading.Event,
        archive: ArchiveWriter | None,
        watchdog: Watchdog,
        quota: QuotaGuard,
        on_response: Callable[[int | None], None] | None = None,
    ) -> None:
        self.archive = archive
        self.quota = quota
        self.on_response = on_response
        # The archive's write error, once it failed: the export stops on it (after committing
        # what was fetched, this run included).
        self.archive_error: OutputError | None = None
        self.settings = settings
        self.credentials = credentials
        self.abort = abort
        # A stopping export must not sit out a backoff, a Retry-After or a rate-limit slot:
        # those waits end when the abort is set.
        self.sleep = _until_aborted(abort)
        self.watchdog = watchdog
        self.signer = NcpSignatureV2(
            credentials.access_key, credentials.secret_key, credentials.api_key
        )
        self.throttle = Throttle(settings.concurrency, settings.rate_limit, self.sleep)
        self.retries = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[NsmlClient] = []

    def _count_retry(self, _exc: BaseException) -> None:
        with self._lock:
            self.retries += 1

    def client(self) -> NsmlClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = NsmlClient(
                self.settings,
                self.credentials,
                signer=self.signer,
                sleep=self.sleep,
                abort=self.abort,
                on_retry=self._count_retry,
                throttle=self.throttle,
                watchdog=self.watchdog,
                quota=self.quota,
                on_response=self.on_response,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def fetch(self, item: RunToFetch) -> Fetched:
        """One run, flattened; a FailedPair for anything that is this run's own problem. With
        --nodes, the run's node list too: a run whose node list failed comes with that
        failure (the run is written all the same, its stored nodes left alone)."""
        pair = item.pair
        try:
            result = self.client().get_run(pair)
        except (AuthenticationError, QuotaExhausted):
            self.abort.set()  # here, not in the collector: the next queued pair must not start
            raise
        except RunFetchFailed as exc:
            return FailedPair(
                pair, exc.error.message, exc.error.status, exc.error.error_code, exc.attempts
            )
        fetched_at = utc_now()
        node_list, node_failure = self._node_list(pair) if self.settings.nodes else (None, None)
        if self.archive is not None and self.archive_error is None:
            try:
                pages = node_list.pages if node_list is not None else None
                self.archive.write(pair, result.raw, fetched_at, node_pages=pages)
            except OutputError as exc:
                with self._lock:
                    self.archive_error = self.archive_error or exc
                self.abort.set()  # no new fetch; this run is still returned and committed
        try:
            run = flatten_run(
                result.body, pair, fetched_at, lambda: jsontext.loads_exact(result.raw), listed=item
            )
        except RunShapeError as exc:
            return FailedPair(pair, f"unusable response: {exc}", 200, None, result.attempts)
        if node_list is not None:
            run.nodes = node_list.nodes
        return run if node_failure is None else (run, node_failure)

    def _node_list(self, pair: Pair) -> tuple[NodeList | None, FailedPair | None]:
        """The run's node list, or why it failed. Cut by a stopping export, it is neither: the
        run lands without it, and the next export asks again."""
        try:
            return fetch_node_list(self.client(), pair), None
        except (AuthenticationError, QuotaExhausted):
            self.abort.set()
            raise
        except Aborted:
            return None, None
        except RunFetchFailed as exc:
            error = exc.error
            failure = FailedPair(
                pair, error.message, error.status, error.error_code, exc.attempts, of_nodes=True
            )
            return None, failure

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _until_aborted(abort: threading.Event) -> Callable[[float], None]:
    """A sleep that ends early once ``abort`` is set."""

    def sleep(seconds: float) -> None:
        abort.wait(seconds)

    return sleep


def _drain(finished: queue.SimpleQueue[Any], timeout: float) -> list[Future[Any]]:
    """Every future finished so far, waiting up to ``timeout`` for the first."""
    try:
        done = [finished.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            done.append(finished.get_nowait())
        except queue.Empty:
            return done


def export_runs(
    runs: Iterable[RunToFetch],
    settings: Settings,
    credentials: Credentials,
    warehouse: Warehouse,
    *,
    total: int | None = None,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    archive: ArchiveWriter | None = None,
    skip: Collection[Pair] = (),
    cancel: threading.Event | None = None,
    options: dict[str, Any] | None = None,
    quota: QuotaGuard | None = None,
    on_response: Callable[[int | None], None] | None = None,
    finishing: Callable[[ExportReport], None] | None = None,
) -> ExportReport:
    """Fetch every run and upsert it; see the module docstring for the guarantees.

    ``runs`` may be a lazy iterable (discovery, ``total`` None): fetching starts with the
    first run, and each run counts as requested as it is pulled. Runs whose pair is in ``skip``
    (stored as finished, for --skip-finished) are counted, not fetched. Once ``stop`` is set
    (also before the first run: nothing is then sent), requests in flight get a short grace
    period to finish; once ``cancel`` is set (by the caller, or when that grace ran out), they
    are cut: their runs are neither fetched nor failed, and everything fetched before is still
    committed. ``options`` (free of secrets) go into the batch row with the settings. ``quota``
    is the guard the run list's client uses too (one quota per API key); once it says the quota
    is spent, no request starts, the rest is counted as not attempted, and what was fetched is
    committed. ``on_response`` is told each request's HTTP status (None: no response).
    ``finishing(report)`` runs once the runs are committed, before the batch row is finished
    and the summary logged (unless an error stopped the export), to add to the report."""
    started = time.monotonic()
    report = ExportReport(requested=total or 0)
    log.info(
        "export started: %s pairs",
        total if total is not None else "unknown",
        extra=event("batch_started", pairs=total, **settings.public_dict()),
    )
    batch = warehouse.batch_log(
        EXPORT_COMMAND, {**settings.public_dict(), "pairs": total, **(options or {})}
    )
    export = _Export(
        runs,
        settings,
        credentials,
        warehouse.store,
        report,
        batch,
        stop=stop or threading.Event(),
        cancel=cancel,
        archive=archive,
        skip=skip,
        count_requested=total is None,
        quota=quota or QuotaGuard(),
        on_response=on_response,
    )

    def work() -> None:
        if progress is not None:
            progress(report)  # the start: nothing done yet, and how many are requested if known
        export.run(progress)

    return _settle(work, report, batch, export.writer, started, stop, archive, finishing)


class _Export:
    """One export's moving parts: runs are pulled from the source into a bounded window of
    fetches on the pool, their outcomes collected on this thread, and the runs written a chunk
    at a time. The steps are methods so that :meth:`run` reads as the loop it is."""

    def __init__(
        self,
        runs: Iterable[RunToFetch],
        settings: Settings,
        credentials: Credentials,
        store: RunStore,
        report: ExportReport,
        batch: BatchLog,
        *,
        stop: threading.Event,
        cancel: threading.Event | None,
        archive: ArchiveWriter | None,
        skip: Collection[Pair],
        count_requested: bool,
        quota: QuotaGuard,
        on_response: Callable[[int | None], None] | None = None,
    ) -> None:
        self.source = iter(runs)
        self.settings = settings
        self.report = report
        self.stop = stop
        self.skip = skip
        self.count_requested = count_requested
        # Set on a 401, an interrupt or an error: no new fetch starts, retries give up.
        self.abort = threading.Event()
        if stop.is_set():  # stopped while the export was being set up
            report.interrupted = True
            self.abort.set()
        self.fetcher = _Fetcher(
            settings,
            credentials,
            self.abort,
            archive,
            Watchdog(cancel=cancel, stop=stop),
            quota,
            on_response,
        )
        # Pulled but neither fetched nor failed: the export stopped first (quota or signal).
        self.unfinished = 0
        self.source_ended = False
        self.writer = ChunkWriter(store, settings.chunk_size, report, batch, stop=stop)
        self.window = settings.concurrency * (1 + QUEUE_PER_WORKER)
        # Finished futures arrive on a queue: waiting on the whole in-flight set each time
        # (concurrent.futures.wait) costs more than the fetches at high concurrency.
        self.finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.in_flight: set[Future[Any]] = set()

    def run(self, progress: ProgressCallback | None) -> None:
        report = self.report
        with ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="fetch") as pool:
            try:
                while True:
                    self._pull(pool)
                    if not self.in_flight:
                        break
                    done = _drain(self.finished, timeout=0.5)
                    self.in_flight.difference_update(done)
                    if self.stop.is_set() and not self.abort.is_set():
                        report.interrupted = True
                        self.abort.set()  # no new attempts; in-flight ones finish (in grace)
                    self._collect(done)
                    report.retried = self.fetcher.retries
                    if progress is not None and done:
                        progress(report)
                if report.quota_error is not None:
                    self._count_not_attempted()
                if report.auth_error is None:
                    self.writer.flush()  # what was fetched is kept, also when interrupted
                    self.writer.mark_gone()
                if self.fetcher.archive_error is not None:
                    raise self.fetcher.archive_error
            except BaseException:
                self.abort.set()
                for future in self.in_flight:
                    future.cancel()
                raise
            finally:
                self.fetcher.close()

    def _pull(self, pool: ThreadPoolExecutor) -> None:
        """Start fetches until the window is full or the source ends; a source that fails
        (discovery) ends the pulling, and what was started still finishes."""
        report = self.report
        while not self.abort.is_set() and len(self.in_flight) < self.window:
            try:
                item = next(self.source, None)
            except AuthenticationError as exc:  # discovery was refused
                report.auth_error = exc
                self.abort.set()
                return
            except QuotaExhausted as exc:  # the run list hit the spent quota: stop asking
                report.quota_error = report.quota_error or exc
                self.abort.set()
                self.source = iter(())
                return
            except EtlError as exc:  # discovery failed: finish what was started
                report.source_error = exc
                self.source = iter(())
                return
            except Aborted:  # discovery's request was cut: the export is stopping
                self.source = iter(())
                return
            if item is None:
                self.source_ended = True
                return
            if self.count_requested:
                report.requested += 1
            if self.skip and item.pair in self.skip:
                report.skipped += 1
                continue
            future = pool.submit(self.fetcher.fetch, item)
            self.in_flight.add(future)
            future.add_done_callback(self.finished.put)

    def _collect(self, done: list[Future[Any]]) -> None:
        """Each finished fetch into the report, and its run into the writer."""
        report = self.report
        for future in done:
            try:
                outcome = future.result()
            except AuthenticationError as exc:
                if report.auth_error is None:
                    report.auth_error = exc
                    self.abort.set()
                continue
            except QuotaExhausted as exc:
                report.quota_error = report.quota_error or exc
                self.abort.set()
                self.unfinished += 1
                continue
            except Aborted:
                self.unfinished += 1
                continue
            if isinstance(outcome, tuple):  # the run landed, its node list failed
                outcome, node_failure = outcome
                report.record_failure(node_failure)
            if isinstance(outcome, FailedPair):
                report.record_failure(outcome)
            else:
                report.fetched += 1
                if report.auth_error is None:  # after a 401, nothing more is written
                    self.writer.add(outcome)

    def _count_not_attempted(self) -> None:
        """After the quota stopped the export: the runs it left. A pairs list is counted to
        its end (no request: skipped runs stay skipped); a run list is not read further."""
        report = self.report
        left = self.unfinished
        if self.count_requested:
            report.list_unread = not self.source_ended
        else:
            for item in self.source:
                if self.skip and item.pair in self.skip:
                    report.skipped += 1
                else:
                    left += 1
        report.not_attempted = left


def _settle(
    work: Callable[[], None],
    report: ExportReport,
    batch: BatchLog,
    writer: ChunkWriter,
    started: float,
    stop: threading.Event | None,
    archive: ArchiveWriter | None = None,
    finishing: Callable[[ExportReport], None] | None = None,
) -> ExportReport:
    """Do ``work`` (an export's or a load's loop), then end it the same way whatever happened:
    an error that stops it (a database or archive error, a bug, a progress callback that
    raised) becomes ``report.error``, after the runs in hand are committed; the archive is
    closed (its last buffered lines written); ``finishing`` adds to the report (only after
    no error: the runs are committed by then, whatever it does); the batch row gets the
    report's outcome; and the error is raised again, so that no way out leaves the row
    ``running``."""
    try:
        work()
    except Exception as exc:
        report.error = exc
        writer.salvage()
    if archive is not None:
        try:
            archive.close()
        except OutputError as exc:
            report.error = report.error or exc
    if finishing is not None and report.error is None:
        # After the runs' last commit, before the batch row's end: its finished_at, the
        # elapsed time and the metrics' end all count what finishing takes.
        try:
            finishing(report)
        except Exception as exc:  # a bug: the batch row says it, as for one of work's
            report.error = exc
    if stop is not None and stop.is_set():
        report.interrupted = True  # also when it came after the last run was in hand
    report.elapsed = time.monotonic() - started
    batch.finish(report)
    report.batch_id = batch.id
    log_finished(report)
    if report.error is not None:
        # What came before, for the caller, the metrics and --failures-out: ours declare the
        # attribute; a bug's exception gets it too (one without a __dict__ cannot).
        with contextlib.suppress(AttributeError):
            report.error.report = report  # type: ignore[attr-defined]
        raise report.error
    return report


def load_archive(
    records: Iterable[ArchivedRun],
    warehouse: Warehouse,
    *,
    chunk_size: int,
    progress: ProgressCallback | None = None,
    options: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
    finishing: Callable[[ExportReport], None] | None = None,
) -> ExportReport:
    """Replay archived responses (or plain run objects) through the same transform and upsert.

    Lines that cannot be used are failed entries, named by FILE:LINE; the rest land. When
    ``stop`` is set (a signal), reading stops and what was read is still committed.
    ``finishing`` as for :func:`export_runs`.
    """
    started = time.monotonic()
    report = ExportReport()
    batch = warehouse.batch_log(LOAD_COMMAND, options or {})
    writer = ChunkWriter(warehouse.store, chunk_size, report, batch, stop=stop)
    now = utc_now()

    def work() -> None:
        if progress is not None:
            progress(report)  # the start
        for record in records:
            if stop is not None and stop.is_set():
                break
            report.requested += 1
            if record.problem is not None or record.pair is None:
                report.record_failure(
                    FailedPair(None, record.problem or f"{record.where}: unusable")
                )
                continue
            try:
                run = flatten_run(
                    record.body, record.pair, record.fetched_at or now, record.exact_body
                )
            except RunShapeError as exc:
                report.record_failure(FailedPair(record.pair, f"{record.where}: {exc}"))
            else:
                run.where = record.where  # a run the database refuses is named by its line too
                if record.node_pages is not None:
                    try:
                        run.nodes = flatten_pages(record.node_pages)
                    except RunShapeError as exc:
                        report.record_failure(
                            FailedPair(record.pair, f"{record.where}: {exc}", of_nodes=True)
                        )
                writer.add(run)
                report.fetched += 1
            if progress is not None and report.requested % chunk_size == 0:
                progress(report)
        writer.flush()
        if progress is not None:
            progress(report)

    return _settle(work, report, batch, writer, started, stop, finishing=finishing)
