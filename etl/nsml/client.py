"""NsmlClient: signed, retried calls to the NSML REST API.

The retry policy is assembled from named pieces (:func:`is_retryable`, :class:`WaitRetryAfter`,
:func:`build_retrying`). Each attempt builds, signs and sends a new request, so every retry
carries a fresh timestamp and signature; redirects are never followed (requests would not sign
the redirected request again).

A 429 is throttling (errorCode 410 or 420, or none: :func:`is_throttling`), retried with backoff,
unless its errorCode 400 says the usage plan's quota is spent (:func:`is_quota_answer`): the
shared :class:`~nsml_etl.nsml.throttle.QuotaGuard` then lets one more request ask, and once a second
one is refused too no request starts (:class:`~nsml_etl.errors.QuotaExhausted`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.utils import get_environ_proxies
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from .. import jsontext
from ..config import Credentials, Settings
from ..errors import Aborted, ApiError, AuthenticationError, QuotaExhausted, RunFetchFailed
from ..events import event
from ..model import Pair
from .auth import NcpSignatureV2
from .throttle import QuotaGuard, Throttle
from .watchdog import CANCELLED, EXPIRED, InFlight, Watchdog, watch_connections

log = logging.getLogger("nsml_etl.client")  # its name before the sub-packages

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
TOO_MANY_REQUESTS = 429
# The gateway's errorCode of a 429 whose day or month quota is spent (410 and 420 throttle).
QUOTA_EXCEEDED = "400"
# The gateway rejects timestamps more than this far from its clock.
GATEWAY_CLOCK_WINDOW_S = 300
# Error bodies can be whole HTML pages: keep what fits on a summary line.
MAX_ERROR_TEXT = 200
USER_AGENT = "nsml-etl"


@dataclass
class FetchResult:
    body: Any
    attempts: int
    raw: bytes = b""  # the body as received, for the archive and an exact re-parse


# -- retry policy ------------------------------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """Retry throttling, gateway trouble and transport trouble; never 400/401/403/404. A quota
    answer is an ApiError (retried) until the QuotaGuard confirms it, then QuotaExhausted."""
    return isinstance(exc, ApiError) and exc.retryable


def is_quota_answer(exc: BaseException) -> bool:
    """429 with errorCode 400: the usage plan's day or month quota is spent (or one stray
    answer says so)."""
    return (
        isinstance(exc, ApiError)
        and exc.status == TOO_MANY_REQUESTS
        and (exc.error_code or "").strip() == QUOTA_EXCEEDED
    )


def is_throttling(exc: BaseException) -> bool:
    """Any other 429 (errorCode 410 or 420, or none): slow down, it heals in seconds."""
    return (
        isinstance(exc, ApiError) and exc.status == TOO_MANY_REQUESTS and not is_quota_answer(exc)
    )


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None when absent/bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, when - now())


def http_date(value: str) -> float | None:
    """An HTTP-date (``Wed, 02 Dec 2026 03:51:37 GMT``) as a POSIX timestamp; None when it is
    not one. A date without a zone is read as UTC, as HTTP dates always are."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class WaitRetryAfter:
    """Wait the server's Retry-After (capped) when it sent one, never less than the backoff."""

    def __init__(self, backoff: Callable[[RetryCallState], float], cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        delay = self.backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay


def build_retrying(
    max_attempts: int,
    backoff_initial: float,
    backoff_max: float,
    retry_after_max: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """The tenacity policy: full-jitter exponential backoff, Retry-After, bounded attempts."""
    return Retrying(
        stop=stop_after_attempt(max_attempts),
        wait=WaitRetryAfter(
            wait_random_exponential(multiplier=backoff_initial, max=backoff_max), retry_after_max
        ),
        retry=retry_if_exception(is_retryable),
        sleep=sleep,
        reraise=True,
    )


# -- responses ---------------------------------------------------------------------------


def gateway_error(response: requests.Response) -> tuple[str | None, str]:
    """(errorCode, message) from a gateway error body, or a short description of an odd one."""
    try:
        payload = json.loads(response.content)
        error = payload.get("error") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError):
        error = None
    if isinstance(error, dict):
        code = error.get("errorCode")
        message = str(error.get("message") or "").strip()
        details = str(error.get("details") or "").strip()
        text = f"{message} ({details})" if details and details != message else message
        return (str(code) if code is not None else None), text[:MAX_ERROR_TEXT]
    kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
    return None, f"{response.reason or 'error'} (non-JSON {kind} body)"[:MAX_ERROR_TEXT]


def refusal(response: requests.Response) -> tuple[str | None, str]:
    """(errorCode, the answer as messages name it: ``HTTP 401 errorCode 200: message``)."""
    code, message = gateway_error(response)
    error_code = f" errorCode {code}" if code else ""
    return code, f"HTTP {response.status_code}{error_code}: {message}"


def clock_skew(response: requests.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the local clock is ahead of the server's, when the Date header says so."""
    server = http_date(response.headers.get("Date") or "")
    return None if server is None else now() - server


def interpret(response: requests.Response, now: Callable[[], float] = time.time) -> Any:
    """The parsed body of a 200, or the matching exception for anything else."""
    status = response.status_code
    if status == 200:
        try:
            return jsontext.loads(response.content)
        except jsontext.TooDeep as exc:  # the whole body came, and would come the same again
            raise ApiError(f"unusable response: {exc}", status=200) from None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                "HTTP 200 with a truncated or non-JSON body", status=200, retryable=True
            ) from None
    code, label = refusal(response)
    if status in AUTH_STATUSES:
        skew = clock_skew(response, now)
        if status == 401 and skew is not None and abs(skew) > GATEWAY_CLOCK_WINDOW_S:
            label += (
                f"; the local clock is off by {skew:+.0f} seconds from the gateway's "
                "(signatures expire after 5 minutes): fix the clock, not the keys"
            )
        raise AuthenticationError(f"authentication failed: {label}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    raise ApiError(
        label,
        status=status,
        error_code=code,
        retryable=status in RETRYABLE_STATUSES,
        retry_after=retry_after if status in (TOO_MANY_REQUESTS, 503) else None,
    )


def quote_segment(value: str) -> str:
    """Percent-encode one path segment, ``/`` included, so it can never leave its slot."""
    return quote(value, safe="")


class NsmlClient:
    """One HTTP session (use one per worker thread) talking to the NSML API."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        signer: NcpSignatureV2 | None = None,
        sleep: Callable[[float], None] = time.sleep,
        abort: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        throttle: Throttle | None = None,
        watchdog: Watchdog | None = None,
        quota: QuotaGuard | None = None,
        on_response: Callable[[int | None], None] | None = None,
    ) -> None:
        self.throttle = throttle
        # Clients of one export share one: the quota is the API key's.
        self.quota = quota or QuotaGuard()
        # Told each attempt's HTTP status (None: no response), for the metrics.
        self.on_response = on_response
        # Bounds each response as a whole (--timeout), and cuts it when the export is
        # cancelled; clients of one export share one.
        self.watchdog = watchdog or Watchdog()
        self._in_flight = InFlight()
        self.base_url = settings.base_url.rstrip("/")
        self.timeout = settings.timeout
        self.auth = signer or NcpSignatureV2(
            credentials.access_key, credentials.secret_key, credentials.api_key
        )
        self.retrying = build_retrying(
            settings.max_attempts,
            settings.backoff_initial,
            settings.backoff_max,
            settings.retry_after_max,
            sleep,
        )
        self.abort = abort or threading.Event()
        self.on_retry = on_retry
        self.session = requests.Session()
        watch_connections(self.session, self._in_flight)
        # requests re-reads proxy and CA settings from the environment on every request
        # (about 1 ms each); read them once here, for the one host we talk to.
        self.session.proxies.update(get_environ_proxies(self.base_url))
        # Over plain HTTP (the simulator) there is no certificate; a bundle path there would
        # only cost requests a stat() of it per request.
        if self.base_url.lower().startswith("https:"):
            self.session.verify = settings.ca_bundle or _ca_bundle_from_env() or True
        self.session.trust_env = False
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self.session.close()

    def _may_start(self) -> None:
        """Raise instead of sending when the export is stopping or the quota is spent."""
        if self.abort.is_set():
            raise Aborted()
        if self.quota.refusal is not None:
            raise QuotaExhausted(f"API quota exhausted: {self.quota.refusal}")

    def _attempt(self, path: str, params: dict[str, Any] | None, attempt: int) -> Any:
        self._may_start()
        if self.throttle is None:
            return self._send(path, params, attempt)
        self.throttle.acquire()
        throttled = False
        try:
            return self._send(path, params, attempt)
        except ApiError as exc:
            throttled = is_throttling(exc)
            raise
        finally:
            self.throttle.release(throttled)

    def send_once(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        """One signed GET, not retried, and its response as it came, body read (``nsml-etl
        check`` reads its status and Date header); transport trouble raises ApiError."""
        url = self.base_url + path
        self.watchdog.begin(self._in_flight, self.timeout)
        try:
            # A new request per attempt: the signer runs again, with a fresh timestamp.
            # Prepared here rather than through Session.request, whose per-call merging of
            # environment, cookies and proxies showed up in the fetch profile.
            request = requests.PreparedRequest()
            request.prepare(
                method="GET", url=url, headers=self.session.headers, params=params, auth=self.auth
            )
            response = self.session.send(
                request,
                timeout=self.timeout,
                allow_redirects=False,
                proxies=self.session.proxies,
                verify=self.session.verify,
            )
            _ = response.content  # read the body inside the attempt: truncation is retryable
        except requests.exceptions.RequestException as exc:
            raise self._failure(exc) from None
        finally:
            self.watchdog.end(self._in_flight)
        return response

    def _send(self, path: str, params: dict[str, Any] | None, attempt: int) -> Any:
        self._may_start()  # the abort (or the quota) may have come while we waited for a slot
        started = time.monotonic()
        ticket = self.quota.ticket()
        try:
            response = self.send_once(path, params)
        except ApiError:
            if self.on_response is not None:
                self.on_response(None)
            raise
        if self.on_response is not None:
            self.on_response(response.status_code)
        if log.isEnabledFor(logging.DEBUG):  # path_url re-parses the URL: only when shown
            path_url = response.request.path_url
            latency_ms = round((time.monotonic() - started) * 1000)
            log.debug(
                "GET %s -> %s in %d ms (attempt %d)",
                path_url,
                response.status_code,
                latency_ms,
                attempt,
                extra=event(
                    "request",
                    method="GET",
                    path=path_url,
                    status=response.status_code,
                    attempt=attempt,
                    latency_ms=latency_ms,
                ),
            )
        try:
            body = interpret(response)
        except ApiError as exc:
            if is_quota_answer(exc):
                if self.quota.refused(exc.message):
                    raise QuotaExhausted(f"API quota exhausted: {exc.message}") from None
            elif exc.status != TOO_MANY_REQUESTS:
                self.quota.answered(ticket)  # it got past the usage plan
            raise
        self.quota.answered(ticket)
        return body, response.content

    def _failure(self, exc: requests.exceptions.RequestException) -> Exception:
        """What a failed attempt raises: the watchdog's cut first (a cut shows up as any of
        the errors below), then TLS and transport trouble; anything else is a bug."""
        cut = self._in_flight.cut
        if cut == CANCELLED:
            return Aborted()
        where = _host_port(self.base_url)
        if cut == EXPIRED:  # the whole response took longer than --timeout
            return ApiError(f"transport error: read timed out ({where})", retryable=True)
        if isinstance(exc, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                return ApiError(
                    f"TLS certificate verification failed ({where}); "
                    "behind a TLS-inspecting proxy, pass "
                    "its CA bundle with --ca-bundle (or REQUESTS_CA_BUNDLE)"
                )
            return ApiError(f"TLS error: {_transport_reason(exc)} ({where})")
        if isinstance(
            exc,
            requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | requests.exceptions.ChunkedEncodingError
            | requests.exceptions.ContentDecodingError,
        ):
            return ApiError(
                f"transport error: {_transport_reason(exc)} ({where})",
                retryable=True,
            )
        raise exc

    def get(self, path: str, params: dict[str, Any] | None = None) -> FetchResult:
        """GET with the retry policy; raises ApiError, AuthenticationError, QuotaExhausted or
        Aborted."""
        retrying = self.retrying.copy(before_sleep=self._before_sleep)
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            return self._attempt(path, params, attempts)

        try:
            body, raw = retrying(attempt)
        except ApiError as exc:
            exc.attempts = attempts
            raise
        return FetchResult(body=body, attempts=attempts, raw=raw)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.debug("attempt %d failed (%s); retrying", state.attempt_number, exc)
        if self.on_retry is not None and exc is not None:
            self.on_retry(exc)

    def get_run(self, pair: Pair) -> FetchResult:
        """``GET /projects/{projectId}/runs/{runName}``; RunFetchFailed when it cannot."""
        path = f"/projects/{quote_segment(pair.project_id)}/runs/{quote_segment(pair.run_name)}"
        try:
            return self.get(path)
        except ApiError as exc:
            raise RunFetchFailed(pair, exc, exc.attempts) from None

    def list_nodes(self, pair: Pair, page: int, page_size: int) -> FetchResult:
        """``GET /projects/{projectId}/runs/{runName}/nodes``: one page of a run's nodes."""
        path = (
            f"/projects/{quote_segment(pair.project_id)}/runs/{quote_segment(pair.run_name)}/nodes"
        )
        return self.get(path, {"page": page, "pageSize": page_size})

    def list_runs(self, page: int, page_size: int) -> FetchResult:
        """``GET /projects/runs``: one page of run summaries, newest first."""
        return self.get("/projects/runs", {"page": page, "pageSize": page_size})


def _ca_bundle_from_env() -> str | None:
    """The CA bundle requests would have taken from the environment."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


# The causes of a transport failure an operator can act on, in the words they search for; the
# first one found in the exception's chain names it. requests' own messages embed the full URL
# and connection-pool details, so they are not shown.
TRANSPORT_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (requests.exceptions.ConnectTimeout, "connect timed out"),
    (requests.exceptions.ReadTimeout, "read timed out"),
    (ConnectionRefusedError, "connection refused"),
    (socket.gaierror, "name not resolved"),
    (ssl.SSLCertVerificationError, "TLS verification failed"),
    (ConnectionResetError, "connection reset"),
    (TimeoutError, "timed out"),
)


def _transport_reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        for kind, words in TRANSPORT_CAUSES:
            if isinstance(cause, kind):
                return words
    return type(exc).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: urllib3 keeps the cause in ``reason`` or the first argument,
    Python in ``__cause__`` / ``__context__``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [getattr(current, "reason", None), *current.args[:1]]
        wrapped += [current.__cause__, current.__context__]
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _host_port(base_url: str) -> str:
    """``host:port`` of the API, the port as the scheme implies when the URL gives none."""
    parts = urlsplit(base_url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return parts.netloc
    return f"{parts.hostname}:{port}"
