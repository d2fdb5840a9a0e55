"""Whole-response deadlines, and cancelling requests in flight.

requests' ``timeout`` bounds each socket read, not a response: a server that sends its headers
and then one byte a second held an export for minutes with ``--timeout 3``. And a worker
blocked in a read cannot be told to stop: signals reach only the main thread, and a read
returns only when data comes. So one :class:`Watchdog` thread looks at the requests in flight
and shuts down the socket of any request past its deadline, or of every request once the export
is cancelled (a repeated signal, or a stop whose grace period ran out); the blocked read fails
at once, and the client learns from :attr:`InFlight.cut` why, to report a timeout (retried) or
an abort (not).

Each client records the connection its current request uses through the pool classes that
:func:`watch_connections` mounts on its session; a client serves one thread, so one slot
suffices.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger("nsml_etl.watchdog")  # its name before the sub-packages

# How late the watchdog may notice a cancel (a deadline it wakes up for exactly).
WATCH_TICK_S = 0.25
# The thread ends after this long with no request in flight; the next request starts it again
# (a client nobody closes leaves no thread behind).
IDLE_EXIT_S = 5.0
# After a stop (the first signal), requests in flight get this long to finish before they are
# cut: a response at normal latency arrives well within it, a hung one would hold the export
# until --timeout, on every worker.
INTERRUPT_GRACE_S = 2.0

EXPIRED, CANCELLED = "expired", "cancelled"


class InFlight:
    """The request one client has in flight: its deadline, its connection and, once the
    watchdog cut it, why (:data:`EXPIRED` or :data:`CANCELLED`)."""

    __slots__ = ("deadline", "connection", "cut")

    def __init__(self) -> None:
        self.deadline = 0.0
        self.connection: object | None = None
        self.cut: str | None = None


class Watchdog:
    """Cuts requests past their deadline, and every request once ``cancel`` is set.

    With ``stop``, a set ``stop`` sets ``cancel`` after :data:`INTERRUPT_GRACE_S`."""

    def __init__(
        self, cancel: threading.Event | None = None, stop: threading.Event | None = None
    ) -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self.stop = stop
        self._lock = threading.Lock()
        self._active: set[InFlight] = set()
        self._thread: threading.Thread | None = None

    def begin(self, slot: InFlight, timeout: float) -> None:
        """Watch ``slot`` until :meth:`end`; it must answer within ``timeout`` seconds."""
        with self._lock:
            slot.deadline = time.monotonic() + timeout
            slot.cut = None
            self._active.add(slot)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="request-watchdog", daemon=True
                )
                self._thread.start()

    def end(self, slot: InFlight) -> None:
        """Stop watching ``slot``; its connection is never cut after this returns."""
        with self._lock:
            self._active.discard(slot)
            slot.connection = None

    def _run(self) -> None:
        idle_since: float | None = None
        stopped_at: float | None = None
        while True:
            now = time.monotonic()
            if self.stop is not None and self.stop.is_set() and not self.cancel.is_set():
                stopped_at = now if stopped_at is None else stopped_at
                if now - stopped_at >= INTERRUPT_GRACE_S:
                    log.info(
                        "requests still in flight %.0fs after the stop: cancelling them",
                        INTERRUPT_GRACE_S,
                    )
                    self.cancel.set()
            cancel = self.cancel.is_set()
            wait = WATCH_TICK_S
            with self._lock:
                if not self._active:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= IDLE_EXIT_S:
                        self._thread = None
                        return
                else:
                    idle_since = None
                for slot in self._active:
                    if slot.cut is None:
                        if cancel:
                            slot.cut = CANCELLED
                        elif now >= slot.deadline:
                            slot.cut = EXPIRED
                        else:
                            wait = min(wait, slot.deadline - now)
                            continue
                    # Again on every round until the request ends: its socket may not exist
                    # yet (still connecting) when it is first cut.
                    _shut_down(slot.connection)
            time.sleep(wait)


def _shut_down(connection: object | None) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for a TLS socket: SSLSocket.shutdown would unwrap
        # it under the reading thread's feet; this only ends the byte stream, so the read fails.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass  # already closed


def _recording_pool(base: type[HTTPConnectionPool], slot: InFlight) -> type:
    class RecordingPool(base):  # type: ignore[misc, valid-type]
        def _get_conn(self, timeout: float | None = None) -> Any:
            connection = super()._get_conn(timeout)
            slot.connection = connection
            return connection

    return RecordingPool


class _WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools record in ``slot`` the connection each request takes."""

    def __init__(self, slot: InFlight) -> None:
        self._pool_classes = {
            "http": _recording_pool(HTTPConnectionPool, slot),
            "https": _recording_pool(HTTPSConnectionPool, slot),
        }
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are classes of their own
            manager.pool_classes_by_scheme = self._pool_classes
        return manager


def watch_connections(session: requests.Session, slot: InFlight) -> None:
    """Make ``session`` record the connection of each request in ``slot``."""
    adapter = _WatchedAdapter(slot)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
