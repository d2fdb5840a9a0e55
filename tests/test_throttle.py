"""Backing off as a whole: the adaptive concurrency cap and --rate-limit."""

from __future__ import annotations

import json

from conftest import fetch_rows, write_pairs

from nsml_etl.nsml.throttle import AdaptiveLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limit_halves_on_throttling_once_per_burst_and_grows_back_slowly():
    clock = Clock()
    limit = AdaptiveLimit(16, clock=clock, cooldown=1.0)
    for _ in range(5):  # one burst of 429s: one halving
        limit.acquire()
        limit.release(throttled=True)
    assert limit.limit == 8
    clock.now += 1.5
    limit.acquire()
    limit.release(throttled=True)
    assert limit.limit == 4
    for _ in range(4):
        limit.acquire()
        limit.release(throttled=False)
    assert limit.limit == 5  # +1 after a full cap's worth of successes
    for _ in range(200):
        limit.acquire()
        limit.release(throttled=False)
    assert limit.limit == 16  # never above the configured concurrency


def test_limit_never_drops_below_one():
    clock = Clock()
    limit = AdaptiveLimit(2, clock=clock, cooldown=0)
    for _ in range(10):
        limit.acquire()
        limit.release(throttled=True)
        clock.now += 1
    assert limit.limit == 1


def test_rate_limiter_spaces_starts():
    clock, sleeps = Clock(), []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    limiter = RateLimiter(4, clock=clock, sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert sleeps == [0.25, 0.5, 0.75, 1.0]


def test_sustained_429s_shrink_concurrency(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(
        projects=1,
        runs_per_project=60,
        fault_rate=0.5,
        fault_kinds=("429",),
        fault_streak=3,
        retry_after=0,
        latency=0.02,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "16",
        "--max-attempts",
        "5",
        "--backoff-initial",
        "0.01",
        "--log-format",
        "json",
    )
    assert result.exit_code == 0, result.output
    throttled = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if json.loads(line)["event"] == "throttled"
    ]
    assert throttled and throttled[0]["from"] == 16 and throttled[0]["to"] == 8
    assert fetch_rows(sqlite_url, "SELECT COUNT(*) AS n FROM nsml_runs") == [{"n": 60}]


def test_rate_limit_caps_requests_per_second(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=16)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        sqlite_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "8",
        "--rate-limit",
        "10/s",
    )
    assert result.exit_code == 0, result.output
    arrivals = sorted(sim.stats.arrivals)
    # Whatever the machine's speed, no one-second window may hold more than 10 starts (+1 for
    # the window's edges).
    for i, start in enumerate(arrivals):
        assert sum(1 for t in arrivals[i:] if t < start + 1.0) <= 11
