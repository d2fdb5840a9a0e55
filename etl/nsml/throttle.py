"""Pacing requests as a whole, so throttling slows the export instead of every worker
hammering the gateway.

* :class:`AdaptiveLimit` caps requests in flight: it halves the cap on a 429 (at most once per
  cooldown, since one burst of 429s is one signal) and grows it back by one after a full cap's
  worth of successes (additive increase, multiplicative decrease, as TCP does).
* :class:`RateLimiter` spaces request starts to at most ``rate`` per second (``--rate-limit``).
* :class:`QuotaGuard` tells a spent quota (429 errorCode 400, which no backoff heals) from one
  stray answer, and once it is spent lets no request start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..events import event

log = logging.getLogger("nsml_etl.throttle")  # its name before the sub-packages

# One halving per this many seconds: the 429s of one burst all arrive within it.
THROTTLE_COOLDOWN_S = 1.0
# How long a waiting worker sleeps between checks of the cap (and of an abort).
WAIT_SLICE_S = 0.2


class AdaptiveLimit:
    def __init__(
        self,
        maximum: int,
        clock: Callable[[], float] = time.monotonic,
        cooldown: float = THROTTLE_COOLDOWN_S,
    ) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self._clock = clock
        self._cooldown = cooldown
        self._last_cut = float("-inf")
        self._successes = 0
        self._cond = threading.Condition(threading.Lock())

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait(WAIT_SLICE_S)
            self.in_flight += 1

    def release(self, throttled: bool) -> None:
        freed = 1  # this request's slot
        with self._cond:
            self.in_flight -= 1
            if throttled:
                now = self._clock()
                if now - self._last_cut >= self._cooldown and self.limit > 1:
                    old, self.limit = self.limit, max(1, self.limit // 2)
                    log.info(
                        "throttled by the gateway: concurrency %d -> %d",
                        old,
                        self.limit,
                        extra=event("throttled", **{"from": old, "to": self.limit}),
                    )
                self._last_cut = now
                self._successes = 0
            else:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
                    freed += 1  # a new slot too
            self._cond.notify(freed)


class RateLimiter:
    """At most ``rate`` request starts per second, shared by all workers."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


class Throttle:
    """Both limits together, as the client uses them around each attempt."""

    def __init__(
        self,
        concurrency: int,
        rate: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = AdaptiveLimit(concurrency)
        self.rate = RateLimiter(rate, sleep=sleep) if rate else None

    def acquire(self) -> None:
        self.limit.acquire()
        if self.rate is not None:
            self.rate.acquire()

    def release(self, throttled: bool) -> None:
        self.limit.release(throttled)


class QuotaGuard:
    """Whether the usage plan's day or month quota is spent, as the gateway's answers tell.

    One quota answer is only a suspicion (a gateway hiccup, a stray reply): its request is
    retried as throttling is. A second request refused so confirms it, unless a request sent
    after the first refusal got through in between (then that refusal was stray). From then on
    no request starts. One per API key, so one per export: its clients share it. Each request
    takes a :meth:`ticket` before it is sent and reports its answer with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets = 0
        # While suspected: the last ticket handed out when the first refusal came back; an
        # answer to a later one proves the quota is not spent.
        self._suspect: int | None = None
        self.refusal: str | None = None  # the gateway's words, once spent
        self.refusals = 0  # quota answers seen

    @property
    def spent(self) -> bool:
        return self.refusal is not None

    def ticket(self) -> int:
        with self._lock:
            self._tickets += 1
            return self._tickets

    def answered(self, ticket: int) -> None:
        """The gateway let this request through (any answer but a 429)."""
        with self._lock:
            if self._suspect is not None and ticket > self._suspect and self.refusal is None:
                log.info("the quota answer before was a stray one: the quota is not spent")
                self._suspect = None

    def refused(self, message: str) -> bool:
        """The gateway said the quota is spent; True once that is confirmed."""
        with self._lock:
            self.refusals += 1
            if self.refusal is None:
                if self._suspect is None:
                    self._suspect = self._tickets
                    log.info("%s: the quota may be spent; asking once more", message)
                    return False
                self.refusal = message
                log.info(  # info: the export's error line and summary say it to the user
                    "%s, twice in a row: the API quota is spent; no new requests",
                    message,
                    extra=event("quota_exhausted", reason=message),
                )
            return True
