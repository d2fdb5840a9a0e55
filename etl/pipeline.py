"""pairs -> fetch -> transform -> load, in chunks; returns a report of what happened.

Fetching runs on ``concurrency`` worker threads, each with its own HTTP session; the calling
thread collects results and writes a chunk (one transaction) every ``chunk_size`` runs, so an
interrupted export keeps everything committed before. Authentication failures stop the export
at once and write nothing more; an interrupt (``stop`` event) stops fetching and commits what
was fetched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .auth import NcpSignatureV2
from .client import Aborted, NsmlClient, RunFetchFailed, utc_now
from .config import Credentials, Settings
from .errors import (
    EXIT_AUTH_FAILED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    AuthenticationError,
)
from .load import RunStore
from .pairs import Pair
from .transform import FlatRun, RunShapeError, build_frame, env_keys, extra_fields, flatten_run

log = logging.getLogger(__name__)

# Pairs queued per worker beyond the one it is fetching: keeps workers busy while the main
# thread writes a chunk, without reading the whole pairs list into futures.
QUEUE_PER_WORKER = 4


@dataclass(frozen=True)
class FailedPair:
    pair: Pair
    reason: str
    status: int | None = None
    error_code: str | None = None
    attempts: int = 1


@dataclass
class ExportReport:
    requested: int = 0
    fetched: int = 0
    exported: int = 0
    failed: list[FailedPair] = field(default_factory=list)
    retried: int = 0
    elapsed: float = 0.0
    chunks: int = 0
    auth_error: AuthenticationError | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.auth_error is not None:
            return EXIT_AUTH_FAILED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        return (
            f"Summary: exported {self.exported}, failed {len(self.failed)}, "
            f"retried {self.retried}, elapsed {self.elapsed:.2f}s"
        )


ProgressCallback = Callable[[ExportReport], None]


class _Fetcher:
    """Per-thread clients sharing one signer, a retry counter and the abort flag."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        abort: threading.Event,
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.abort = abort
        self.sleep = sleep
        self.signer = NcpSignatureV2(
            credentials.access_key, credentials.secret_key, credentials.api_key
        )
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
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def fetch(self, pair: Pair) -> FlatRun | FailedPair:
        """One pair, flattened; a FailedPair for anything that is this pair's own problem."""
        try:
            result = self.client().get_run(pair)
        except AuthenticationError:
            self.abort.set()  # here, not in the collector: the next queued pair must not start
            raise
        except RunFetchFailed as exc:
            return FailedPair(
                pair, exc.error.message, exc.error.status, exc.error.error_code, exc.attempts
            )
        try:
            return flatten_run(result.body, pair, utc_now())
        except RunShapeError as exc:
            return FailedPair(pair, f"unusable response: {exc}", 200, None, result.attempts)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def write_chunk(store: RunStore, runs: Sequence[FlatRun]) -> int:
    """Schema first (new env keys become columns), then one upsert transaction."""
    if not runs:
        return 0
    mapping = store.prepare(env_keys(runs), extra_fields(runs))
    return store.upsert(build_frame(runs, mapping.env, mapping.fields))


def export_runs(
    pairs: Iterable[Pair],
    settings: Settings,
    credentials: Credentials,
    store: RunStore,
    *,
    total: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> ExportReport:
    """Fetch every pair and upsert the runs; see the module docstring for the guarantees."""
    started = time.monotonic()
    report = ExportReport(requested=total or 0)
    stop = stop or threading.Event()
    abort = threading.Event()
    fetcher = _Fetcher(settings, credentials, abort, sleep)
    pending: list[FlatRun] = []
    source = iter(pairs)
    window = settings.concurrency * (1 + QUEUE_PER_WORKER)

    def flush() -> None:
        if not pending:
            return
        written = write_chunk(store, pending)
        report.exported += written
        report.chunks += 1
        log.info("committed chunk %d: %d runs (%d so far)", report.chunks, written,
                 report.exported)
        pending.clear()

    with ThreadPoolExecutor(settings.concurrency, thread_name_prefix="fetch") as pool:
        in_flight: set[Future] = set()
        try:
            while True:
                while not abort.is_set() and len(in_flight) < window:
                    pair = next(source, None)
                    if pair is None:
                        break
                    in_flight.add(pool.submit(fetcher.fetch, pair))
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                if stop.is_set() and not abort.is_set():
                    report.interrupted = True
                    abort.set()  # no new attempts; in-flight ones finish and are kept
                for future in done:
                    try:
                        outcome = future.result()
                    except AuthenticationError as exc:
                        if report.auth_error is None:
                            report.auth_error = exc
                            abort.set()
                        continue
                    except Aborted:
                        continue
                    if isinstance(outcome, FailedPair):
                        report.failed.append(outcome)
                    else:
                        report.fetched += 1
                        pending.append(outcome)
                report.retried = fetcher.retries
                if progress is not None:
                    progress(report)
                if report.auth_error is None and len(pending) >= settings.chunk_size:
                    flush()
            report.retried = fetcher.retries
            if report.auth_error is None:
                flush()  # what was fetched is kept, also when interrupted
        except BaseException:
            abort.set()
            for future in in_flight:
                future.cancel()
            raise
        finally:
            fetcher.close()
            report.elapsed = time.monotonic() - started
    return report
