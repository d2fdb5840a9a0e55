"""Pacing requests as a whole, so throttling slows the export instead of every worker
hammering the gateway.

* :class:`AdaptiveLimit` caps requests in flight: it halves the cap on a 429 (at most once per
  cooldown, since one burst of 429s is one signal) and grows it back by one after a full cap's
  worth of successes (additive increase, multiplicative decrease, as TCP does).
* :class:`RateLimiter` spaces request starts to at most ``rate`` per second (``--rate-limit``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .events import event

log = logging.getLogger(__name__)

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
