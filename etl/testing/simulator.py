"""A local NSML API for demos and tests, served over real HTTP.

It serves a deterministic dataset from a seed (:mod:`etl.testing.dataset`: Korean names, empty
and awkward envs, missing fields, undocumented extras), verifies signature v2 and the 5-minute
window exactly as the gateway documents them, answers with gateway-shaped JSON errors, and
injects faults at a given rate: throttling (429 with errorCode 410 and Retry-After, 420
without, or no code at all), a stray quota answer, 500, an HTML 502, 503, 504, dropped
connections, truncated JSON, responses slower than the client's timeout and responses that
trickle in one byte at a time after prompt headers. A usage plan's quota can be spent too
(``quota``): once that many requests were answered, every one after is refused with 429
errorCode 400, as the gateway does until the day or month ends.

Time can pass, if asked (an ``epoch``): runs are then created from the epoch on, wait PENDING,
run IN_PROGRESS and end COMPLETED, FAILED, STOPPED or CANCELED at moments drawn from the seed;
a few are deleted upstream while running. What Get run and the run list answer follows the
simulated clock (``set_clock``, ``advance``, or a clock file a script rewrites), so exports at
successive moments build a real change history. Without an epoch the dataset stays frozen.
"""

from __future__ import annotations

import contextlib
import json
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..clock import parse_moment
from ..errors import InputError
from ..nsml.auth import (
    ACCESS_KEY_HEADER,
    API_KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    string_to_sign,
)
from .dataset import (
    add_timeline,
    generate_dataset,
    generated_nodes,
    list_time,
    public_run,
    run_summary,
)

PREFIX = "/nsml/v1"
FAULT_KINDS = (
    "429",
    "429-no-retry-after",
    "429-no-code",
    "429-quota",
    "500",
    "502-html",
    "503",
    "504",
    "drop",
    "truncate",
    "slow",
    "trickle",
)
# Injected unless --faults says otherwise: a stray quota answer is opt-in, since two in a row
# (likely at a high fault rate) rightly stop an export as a spent quota.
DEFAULT_FAULT_KINDS = tuple(kind for kind in FAULT_KINDS if kind != "429-quota")
SIGNATURE_WINDOW_MS = 5 * 60 * 1000
# The gateway's 429 errorCodes (see nsml-api.md): the usage plan's day or month quota is spent,
# too many requests in a short window, over the plan's requests-per-second rate.
QUOTA_EXCEEDED, THROTTLE_LIMITED, RATE_LIMITED = "400", "410", "420"
# Where the simulated timeline starts unless told (a Monday, 00:00 UTC).
DEFAULT_EPOCH = datetime(2026, 1, 5, 0, 0, 0)


@dataclass
class SimulatorConfig:
    access_key: str
    secret_key: str
    api_key: str | None = None
    seed: int = 1
    projects: int = 2
    runs_per_project: int = 10
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    # At most this many faults in a row for one path (None: no limit), so a test can rely on
    # every run succeeding within the client's attempts.
    fault_streak: int | None = None
    latency: float = 0.0
    slow_seconds: float = 2.0
    # A 'trickle' fault sends status and headers at once, then one byte of the body per this.
    trickle_seconds: float = 1.0
    retry_after: int = 1
    # The usage plan's day or month quota: once this many signed requests were answered, every
    # further one is refused with 429 errorCode 400 (None: no quota). See Simulator.set_quota.
    quota: int | None = None
    max_page_size: int = 100
    clock_offset: float = 0.0  # of the signature window and Date header (real time)
    reject_replays: bool = True
    # Simulated time, opt-in (naive UTC): runs are created from ``epoch`` on and change status
    # as the clock moves; ``clock`` is the moment served (default: the epoch), ``clock_file``
    # a file holding it that a script may rewrite between exports. No epoch: frozen data.
    epoch: datetime | None = None
    clock: datetime | None = None
    clock_file: Path | None = None
    # Share of runs whose node list answers 500 from its first page on, every time (drawn per
    # run from the seed), so that exports with --nodes show node lists that fail alone.
    broken_node_lists: float = 0.0


class RawJson(bytes):
    """A Get-run body served as exactly these bytes (``put_run``), for what Python's json
    cannot write: ``1e400``, ``1.50``, duplicate keys."""


@dataclass
class SimulatorStats:
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    auth_failures: int = 0
    quota_refused: int = 0  # requests refused because the quota was spent
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request


class Simulator:
    """The simulated API. ``start()`` serves on a background thread; ``stop()`` ends it."""

    def __init__(
        self,
        config: SimulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.data = generate_dataset(config.seed, config.projects, config.runs_per_project)
        if config.epoch is not None:
            add_timeline(self.data, config.seed, config.epoch)
        self._clock = config.clock or config.epoch
        self._clock_stamp: int | None = None  # the clock file's mtime when last read
        self.stats = SimulatorStats()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed + 1)
        self._streaks: Counter[str] = Counter()
        self._queued_faults: list[str] = []
        self._quota_used = 0  # signed requests counted against config.quota
        self._seen_signatures: dict[str, int] = {}
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:  # for tests of certificate verification and --ca-bundle
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None
        # Called with the page number after a run-list page is computed (tests use it to
        # create a run between two pages, as a user might while we page).
        self.after_list_page: Callable[[int], None] | None = None
        # Node lists served instead of the generated ones (put_nodes), and node lists that
        # fail from a page on (break_node_list): (fault kind, first page that fails).
        self._nodes: dict[tuple[str, str], list[Any]] = {}
        self._node_faults: dict[tuple[str, str], tuple[str, int]] = {}

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{PREFIX}"

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Let the port go, for a simulator that never served (``stop`` would wait for it)."""
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data, for tests and the demo ----------------------------------------------------

    # -- simulated time ---------------------------------------------------------------------

    @property
    def clock(self) -> datetime | None:
        """The simulated moment served (naive UTC); None when the data is frozen."""
        path = self.config.clock_file
        if path is not None:
            try:
                stamp = path.stat().st_mtime_ns
                if stamp != self._clock_stamp:
                    moment = parse_moment(path.read_text(encoding="utf-8"), str(path))
                    self._clock, self._clock_stamp = moment, stamp
            except (OSError, ValueError, InputError):
                pass  # missing or half-written: keep the moment read before
        return self._clock

    def set_clock(self, moment: datetime) -> None:
        """Serve the data as it is at ``moment`` (naive UTC); turns simulated time on."""
        with self._lock:
            if self.config.epoch is None:
                self.config.epoch = moment
                add_timeline(self.data, self.config.seed, moment)
            self._clock = moment

    def advance(self, delta: timedelta) -> datetime:
        """Move the simulated clock on by ``delta``; returns the new moment."""
        current = self.clock
        if current is None:
            raise ValueError("the simulator has no clock: give it an epoch or set_clock() first")
        self.set_clock(current + delta)
        return current + delta

    def _as_now(self, run: Any) -> Any:
        """A stored run as it is at the simulated moment (None: not created yet, or deleted);
        bodies without a lifecycle (frozen data, put_run) are served as they are."""
        if not isinstance(run, dict) or "_timeline" not in run:
            return run
        state = run["_timeline"].status_at(self.clock)
        if state is None:
            return None
        status, updated = state
        return {
            **run,
            "status": status,
            "_createTime": list_time(run["_timeline"].created),
            "_updateTime": list_time(updated),
        }

    def pairs(self) -> list[tuple[str, str]]:
        return [(pid, rn) for pid, project in self.data.items() for rn in project["runs"]]

    def run(self, project_id: str, run_name: str) -> dict[str, Any]:
        return public_run(self.data[project_id]["runs"][run_name])

    def put_run(self, project_id: str, run_name: str, body: Any) -> None:
        """Replace (or add) what Get run answers for a pair; any JSON, for shape tests."""
        with self._lock:
            project = self.data.setdefault(project_id, {"name": project_id, "runs": {}})
            project["runs"][run_name] = body

    def delete_run(self, project_id: str, run_name: str) -> None:
        """Delete a run upstream: Get run answers 404 and the run list leaves it out."""
        with self._lock:
            self.data.get(project_id, {}).get("runs", {}).pop(run_name, None)

    def put_nodes(self, project_id: str, run_name: str, nodes: list[Any]) -> None:
        """Replace what a run's node list answers (any JSON items, for shape tests)."""
        with self._lock:
            self._nodes[(project_id, run_name)] = nodes

    def break_node_list(
        self, project_id: str, run_name: str, kind: str = "500", from_page: int = 1
    ) -> None:
        """Answer every request for this run's node list from page ``from_page`` on with the
        fault ``kind`` (one of FAULT_KINDS), each time: ``from_page=2`` breaks the list off
        after its first page."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind: {kind}")
        with self._lock:
            self._node_faults[(project_id, run_name)] = (kind, from_page)

    def node_fault(self, raw_path: str) -> str | None:
        """The fault a node-list request gets (break_node_list, broken_node_lists), or None."""
        parts = urlsplit(raw_path)
        segments = [unquote(x) for x in parts.path[len(PREFIX) + 1 :].split("/")]
        if len(segments) != 5 or segments[0] != "projects" or segments[4] != "nodes":
            return None
        pair = (segments[1], segments[3])
        page = _page_number(parse_qs(parts.query))
        with self._lock:
            kind, from_page = self._node_faults.get(pair, (None, 1))
        if kind is not None and page >= from_page:
            return kind
        share = self.config.broken_node_lists
        if share > 0 and random.Random(f"broken {self.config.seed} {pair}").random() < share:
            return "500"
        return None

    def set_faults(self, rate: float, kinds: tuple[str, ...] | None = None) -> None:
        with self._lock:
            self.config.fault_rate = rate
            if kinds is not None:
                self.config.fault_kinds = kinds

    def queue_faults(self, *kinds: str) -> None:
        """Answer the next signed requests with these faults, one each, in order (whatever
        the fault rate): ``queue_faults("429-quota")`` is one stray quota answer."""
        unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(unknown)}")
        with self._lock:
            self._queued_faults.extend(kinds)

    def set_quota(self, remaining: int | None) -> None:
        """Allow ``remaining`` more requests from now on, then refuse every one with the
        quota answer; None lifts the quota (it reset: a new day or month)."""
        with self._lock:
            self.config.quota = None if remaining is None else self._quota_used + remaining

    def spend_quota(self) -> bool:
        """Count one signed request against the quota; True when it is refused (spent)."""
        with self._lock:
            quota = self.config.quota
            if quota is not None and self._quota_used >= quota:
                self.stats.quota_refused += 1
                return True
            self._quota_used += 1
            return False

    # -- request handling ----------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.config.clock_offset

    def check_signature(self, method: str, raw_path: str, headers: Any) -> str | None:
        """None when the request is properly signed, else why not."""
        cfg = self.config
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        access_key = headers.get(ACCESS_KEY_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not (timestamp and access_key and signature):
            return "missing signature headers"
        if not timestamp.isdigit():
            return "malformed timestamp"
        if abs(int(self.now() * 1000) - int(timestamp)) > SIGNATURE_WINDOW_MS:
            return "timestamp outside the 5-minute window"
        if access_key != cfg.access_key:
            return "unknown access key"
        expected = sign(cfg.secret_key, string_to_sign(method, raw_path, timestamp, access_key))
        if signature != expected:
            return "signature mismatch"
        if cfg.api_key is not None and headers.get(API_KEY_HEADER) != cfg.api_key:
            return "invalid API key"
        if cfg.reject_replays:
            with self._lock:
                if signature in self._seen_signatures:
                    return "replayed signature"
                self._seen_signatures[signature] = int(timestamp)
                if len(self._seen_signatures) > 100_000:
                    oldest = int(timestamp) - SIGNATURE_WINDOW_MS
                    self._seen_signatures = {
                        s: t for s, t in self._seen_signatures.items() if t >= oldest
                    }
        return None

    def pick_fault(self, path: str) -> str | None:
        cfg = self.config
        with self._lock:
            if self._queued_faults:
                kind = self._queued_faults.pop(0)
                self.stats.faults[kind] += 1
                return kind
            limit_hit = cfg.fault_streak is not None and self._streaks[path] >= cfg.fault_streak
            if cfg.fault_rate > 0 and not limit_hit and self._rng.random() < cfg.fault_rate:
                self._streaks[path] += 1
                kind = self._rng.choice(cfg.fault_kinds)
                self.stats.faults[kind] += 1
                return kind
            self._streaks[path] = 0
            return None

    def route(self, raw_path: str) -> tuple[int, Any]:
        """(status, JSON body) for a signed request path."""
        parts = urlsplit(raw_path)
        segments = [unquote(s) for s in parts.path[len(PREFIX) + 1 :].split("/")]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if segments == ["projects", "runs"]:
            with self._lock:
                page = self._page(query, self._summaries(), "runList")
            if self.after_list_page is not None:
                self.after_list_page(int(query.get("page", 1)))
            return 200, page
        with self._lock:
            if segments == ["projects"]:
                return 200, self._page(query, self._projects(), "projects", with_total=True)
            if len(segments) == 5 and segments[0] == "projects" and segments[2] == "runs":
                if segments[4] == "nodes":
                    return self._node_page(segments[1], segments[3], query)
            if len(segments) == 4 and segments[0] == "projects" and segments[2] == "runs":
                run = self._as_now(self.data.get(segments[1], {}).get("runs", {}).get(segments[3]))
                if run is not None:
                    return 200, public_run(run) if isinstance(run, dict) else run
        return 404, error_body("300", "Not Found", "no such project or run")

    def _node_page(self, project_id: str, run_name: str, query: dict[str, Any]) -> tuple[int, Any]:
        """A page of a run's node list (under the lock); 404 where Get run would answer 404."""
        run = self._as_now(self.data.get(project_id, {}).get("runs", {}).get(run_name))
        if run is None:
            return 404, error_body("300", "Not Found", "no such project or run")
        nodes = self._nodes.get((project_id, run_name))
        if nodes is None:
            nodes = generated_nodes(run, self.config.seed) if isinstance(run, dict) else []
        return 200, self._page(query, nodes, "nodes", with_total=True)

    def _projects(self) -> list[dict[str, Any]]:
        return [{"projectId": pid, "projectName": p["name"]} for pid, p in self.data.items()]

    def _summaries(self) -> list[dict[str, Any]]:
        runs = [
            run_summary(run)
            for project in self.data.values()
            for run in map(self._as_now, project["runs"].values())
            if isinstance(run, dict)
        ]
        runs.sort(key=lambda r: (r["createTime"] or "", r["projectId"] or ""), reverse=True)
        return runs

    def _page(
        self, query: dict[str, Any], items: list[Any], key: str, with_total: bool = False
    ) -> dict[str, Any]:
        try:
            page = max(1, int(query.get("page", 1)))
            size = max(1, min(int(query.get("pageSize", 10)), self.config.max_page_size))
        except ValueError:
            page, size = 1, 10
        body: dict[str, Any] = {key: items[(page - 1) * size : page * size]}
        if with_total:
            body["totalCount"] = len(items)
        return body


def _page_number(query: dict[str, list[str]]) -> int:
    try:
        return max(1, int(query.get("page", ["1"])[-1]))
    except ValueError:
        return 1


def error_body(code: str, message: str, details: str) -> dict[str, Any]:
    return {"error": {"errorCode": code, "message": message, "details": details}}


def _make_handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real gateway
        # Buffered writes, flushed once per request: status, headers and body leave in one
        # segment, as from a real gateway, instead of costing the client a read for each
        # (130 us of client CPU per request, measured sequentially at zero latency).
        wbufsize = 1 << 16
        # Larger bodies still leave in several writes; with Nagle on, delayed ACKs would add
        # about 40 ms to each of them.
        disable_nagle_algorithm = True
        server_version = "nsml-simulator"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the demo read their own output

        def handle(self) -> None:
            # A client that gave up (a timeout or an interrupt test) is nothing to report.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

        def finish(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().finish()

        def date_time_string(self, timestamp: float | None = None) -> str:
            return formatdate(sim.now(), usegmt=True)

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(payload, RawJson):
                body = bytes(payload)
            else:
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self._send(status, body, "application/json;charset=UTF-8", headers)

        def do_GET(self) -> None:
            with sim._lock:
                sim.stats.arrivals.append(time.monotonic())
            try:
                self._handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def _handle(self) -> None:
            cfg = sim.config
            with sim._lock:
                sim.stats.requests += 1
                sim.stats.by_path[self.path] += 1
            if cfg.latency:
                time.sleep(cfg.latency)
            if not self.path.startswith(PREFIX + "/"):
                return self._reply(404, error_body("300", "Not Found", "unknown path"))
            problem = sim.check_signature(self.command, self.path, self.headers)
            if problem is not None:
                with sim._lock:
                    sim.stats.auth_failures += 1
                return self._reply(401, error_body("200", "Authentication Failed", problem))
            if sim.spend_quota():  # the gateway's usage plan answers before the backend
                return self._reply(
                    429, error_body(QUOTA_EXCEEDED, "Quota Exceeded", "the quota is spent")
                )
            fault = sim.node_fault(self.path) or sim.pick_fault(self.path)
            if fault is not None:
                return self._fault(fault)
            status, payload = sim.route(self.path)
            self._reply(status, payload)

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            with sim._lock:
                sim.stats.by_status[status] += 1
            self._json(status, payload, headers)

        def _fault(self, kind: str) -> None:
            cfg = sim.config
            if kind == "429":
                self._reply(
                    429,
                    error_body(THROTTLE_LIMITED, "Throttle Limited", "too many requests"),
                    {"Retry-After": str(cfg.retry_after)},
                )
            elif kind == "429-no-retry-after":
                self._reply(429, error_body(RATE_LIMITED, "Rate Limited", "over the rate"))
            elif kind == "429-no-code":  # a proxy's throttling page, not the gateway's JSON
                with sim._lock:
                    sim.stats.by_status[429] += 1
                self._send(429, b"<html><body>Too Many Requests</body></html>", "text/html")
            elif kind == "429-quota":  # one stray quota answer: the quota is not spent
                self._reply(429, error_body(QUOTA_EXCEEDED, "Quota Exceeded", "stray"))
            elif kind in ("500", "503", "504"):
                self._reply(int(kind), error_body("500", "Internal Server Error", "backend"))
            elif kind == "502-html":
                with sim._lock:
                    sim.stats.by_status[502] += 1
                self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            elif kind == "drop":
                self.close_connection = True  # hang up without a word
            elif kind == "truncate":
                status, payload = sim.route(self.path)
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                cut = body[: max(1, len(body) // 2)]
                with sim._lock:
                    sim.stats.by_status[status] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                # Alternate: a short body that claims to be complete, and one cut mid-stream.
                honest = sim._rng.random() < 0.5
                self.send_header("Content-Length", str(len(cut) if honest else len(body)))
                self.send_header("Connection", "close")  # so the client will not reuse it
                self.end_headers()
                self.wfile.write(cut)
                self.close_connection = True
            elif kind == "slow":
                time.sleep(cfg.slow_seconds)
                status, payload = sim.route(self.path)
                self._reply(status, payload)
            elif kind == "trickle":
                status, payload = sim.route(self.path)
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                with sim._lock:
                    sim.stats.by_status[status] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                for index in range(len(body)):  # until done, or the client hangs up
                    time.sleep(cfg.trickle_seconds)
                    # Past the buffer: a byte left in it after a hang-up would fail again later.
                    self.connection.sendall(body[index : index + 1])

    return Handler
