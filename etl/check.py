"""``nsml-etl check``: what ``export --dry-run`` cannot tell without sending a request.

Four checks, each one line, ``OK: what: ...`` or ``FAIL: what: ... — what to do``:

* database: connect, it must take writes (a read-only SQLite file or folder would refuse the
  first chunk), and an existing ``--table`` must be one nsml-etl made (as ``export`` checks
  before its first request); nothing is created, not even a missing SQLite file;
* credentials: one signed request to the project list (``GET /projects``, one item);
* API key: whether ``NCP_APIGW_API_KEY`` was sent, and whether the gateway took it or asks
  for one;
* clock: the gateway's ``Date`` against the local clock. Past the signature window (5 minutes)
  every request is refused; a smaller skew is a note.

The exit code is that of the first failing line, the code ``export`` exits with for the same
problem: 2 missing credentials or bad settings, 4 the database, 3 the gateway refused the
credentials, API key or clock, 1 the API could not be reached or answered oddly.
Secrets are never shown: not the keys, not a database password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import (
    ACCESS_KEY_ENV,
    API_KEY_ENV,
    SECRET_KEY_ENV,
    Credentials,
    Settings,
    credentials_from_env,
    flag_message,
    missing_credentials,
)
from .errors import EXIT_AUTH_FAILED, EXIT_OK, EXIT_SOME_FAILED, EtlError

# The request that proves the keys: the project list, one item (cheap for the gateway).
PROBE_PATH = "/projects"
PROBE_PARAMS = {"page": 1, "pageSize": 1}
# A skew past this is worth a note though signatures still pass: a synced clock (NTP) stays
# within a second or two, and one that drifted this far may drift past the window next.
CLOCK_NOTE_S = 30
# The Date header has whole seconds, and the answer takes its time to arrive: a skew this
# small says nothing.
CLOCK_RESOLUTION_S = 2
# Words by which a gateway's refusal names the API key rather than the access keys.
_API_KEY_WORDS = re.compile(r"api[ _-]?key", re.IGNORECASE)
DASH = " — "  # between what is wrong and what to do


@dataclass(frozen=True)
class CheckLine:
    """One check's outcome; ``exit_code`` is what a failure of it makes the command exit."""

    name: str
    ok: bool
    text: str
    exit_code: int = EXIT_OK

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAIL'}: {self.name}: {self.text}"


@dataclass
class CheckReport:
    lines: list[CheckLine]

    @property
    def exit_code(self) -> int:
        return next((line.exit_code for line in self.lines if not line.ok), EXIT_OK)


def run_checks(settings: Settings) -> CheckReport:
    """Every check, in the order ``export`` meets the problems (its exit code then follows
    the first failure). Sends one request at most; writes nothing."""
    lines = [check_database(settings)]
    try:
        credentials = credentials_from_env()
    except EtlError as exc:
        missing = missing_credentials()
        verb = "is" if len(missing) == 1 else "are"
        lines.append(
            CheckLine(
                "credentials",
                False,
                f"{' and '.join(missing)} {verb} not set"
                f"{DASH}export your NCP API keys in the environment (they are "
                "never read from flags or files)",
                exc.exit_code,
            )
        )
        blocked = (
            f"not checked: no request can be signed without the credentials{DASH}set them first"
        )
        lines += [CheckLine(name, False, blocked, exc.exit_code) for name in ("API key", "clock")]
        return CheckReport(lines)
    lines += check_api(settings, credentials)
    return CheckReport(lines)


def check_database(settings: Settings) -> CheckLine:
    """Open the warehouse as a dry run does (a missing SQLite file is reported, never
    created) and look at ``--table``."""
    from sqlalchemy.engine import make_url

    from .urls import database_file, redact_url
    from .warehouse import DRY_RUN, Warehouse

    where = redact_url(settings.db_url)
    try:
        # Every check of a write, each tried in a transaction that is rolled back.
        with Warehouse.open(settings, DRY_RUN) as warehouse:
            new, exists = warehouse.is_new, warehouse.had_table
    except EtlError as exc:
        if exc.setting == "db_url":  # not a URL, an unsupported database, a missing driver
            wrong, said, todo = flag_message(exc).rpartition("; ")
            text = f"{wrong}{DASH}{todo}" if said else f"{exc}{DASH}fix --db (or NSML_ETL_DB_URL)"
            return CheckLine("database", False, text, exc.exit_code)
        sqlite_file = database_file(make_url(settings.db_url)) is not None
        return CheckLine("database", False, _with_advice(str(exc), sqlite_file), exc.exit_code)
    if new:
        return CheckLine(
            "database",
            True,
            f"{where}: the file does not exist yet; the "
            "first export creates it (this check did not)",
        )
    table = (
        f"table {settings.table} is an nsml-etl table"
        if exists
        else f"table {settings.table} does not exist yet; the first export creates it"
    )
    return CheckLine("database", True, f"{where} is reachable and writable; {table}")


def _with_advice(message: str, sqlite_file: bool) -> str:
    """A database error as 'what is wrong — what to do'."""
    wrong, said, todo = message.rpartition("; choose another --table")
    if said:  # the foreign-table error says what to do already
        return f"{wrong}{DASH}choose another --table{todo}"
    if " is read-only: " in message:  # so does the read-only one
        wrong, _, todo = message.rpartition("; ")
        return f"{wrong}{DASH}{todo}"
    if sqlite_file:
        return (
            f"{message}{DASH}fix the path in --db (sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db) or the folder's permissions"
        )
    return (
        f"{message}{DASH}check --db (host, port, database, user, password) and that the "
        "server is running"
    )


@dataclass
class _Probe:
    """What the one request brought: a response, or why there was none."""

    status: int | None = None
    gateway: str = ""  # the gateway's words for a refusal: 'HTTP 401 errorCode 200: ...'
    error_code: str | None = None  # the refusal's errorCode
    projects: int | None = None
    skew: float | None = None  # seconds the local clock is ahead of the gateway's Date
    failure: str | None = None  # no usable answer: transport trouble, an odd body


def _probe(settings: Settings, credentials: Credentials) -> _Probe:
    from .nsml.client import ApiError, NsmlClient, clock_skew, refusal

    client = NsmlClient(settings, credentials)
    try:
        # One attempt: a check reports what it sees rather than waiting out a backoff.
        response = client.send_once(PROBE_PATH, PROBE_PARAMS)
    except ApiError as exc:
        return _Probe(failure=exc.message)
    finally:
        client.close()
    probe = _Probe(status=response.status_code, skew=clock_skew(response))
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("projects"), list):
            probe.failure = "HTTP 200, but not a project list"
        else:
            total = body.get("totalCount")
            probe.projects = total if isinstance(total, int) else len(body["projects"])
        return probe
    probe.error_code, probe.gateway = refusal(response)
    return probe


def check_api(settings: Settings, credentials: Credentials) -> list[CheckLine]:
    """The credentials, API key and clock lines, from one signed request."""
    from .nsml.client import AUTH_STATUSES, QUOTA_EXCEEDED, RETRYABLE_STATUSES, TOO_MANY_REQUESTS

    probe = _probe(settings, credentials)
    endpoint = f"GET {settings.base_url}{PROBE_PATH}"
    clock = _clock_line(probe)
    if probe.status == 200 and probe.failure is None:
        projects = f"{probe.projects} project{'' if probe.projects == 1 else 's'}"
        api_key = (
            f"{API_KEY_ENV} is set and was sent (x-ncp-apigw-api-key); the gateway took the request"
            if credentials.api_key
            else f"{API_KEY_ENV} is not set, and the gateway did not ask for one"
        )
        return [
            CheckLine(
                "credentials",
                True,
                f"{ACCESS_KEY_ENV} and {SECRET_KEY_ENV} "
                f"accepted: {endpoint} answered with {projects}",
            ),
            CheckLine("API key", True, api_key),
            clock,
        ]
    if probe.status in AUTH_STATUSES:
        return [*_refused(probe, endpoint, credentials, clock), clock]
    # No usable answer: nothing is known about the keys, and the clock only from a Date.
    advice = (
        "check --base-url (it ends in /nsml/v1), the network and any proxy, then run check again"
    )
    if probe.status in RETRYABLE_STATUSES:  # answers that say "later" rather than "wrong"
        advice = "the gateway is busy or failing: run check again in a minute"
    if probe.status == TOO_MANY_REQUESTS and probe.error_code == QUOTA_EXCEEDED:
        advice = "the API key's day or month quota is spent: exports resume once it resets"
    blocked = f"not checked: the request got no usable answer{DASH}see credentials"
    return [
        CheckLine(
            "credentials",
            False,
            f"no usable answer from {endpoint}: {probe.failure or probe.gateway}{DASH}{advice}",
            EXIT_SOME_FAILED,
        ),
        CheckLine("API key", False, blocked, EXIT_SOME_FAILED),
        clock if probe.skew is not None else CheckLine("clock", False, blocked, EXIT_SOME_FAILED),
    ]


def _refused(
    probe: _Probe, endpoint: str, credentials: Credentials, clock: CheckLine
) -> list[CheckLine]:
    """The credentials and API key lines of a 401/403: which part the gateway refused, as far
    as its words and the clock tell."""
    refused = f"the gateway refused {endpoint}: {probe.gateway}"
    if _API_KEY_WORDS.search(probe.gateway):
        fix = (
            f"check {API_KEY_ENV} (the API Gateway key of the NSML product)"
            if credentials.api_key
            else f"export {API_KEY_ENV} with your API Gateway key"
        )
        return [
            CheckLine(
                "credentials",
                False,
                f"not verified: the gateway refused the API key first{DASH}see API key",
                EXIT_AUTH_FAILED,
            ),
            CheckLine("API key", False, f"{refused}{DASH}{fix}", EXIT_AUTH_FAILED),
        ]
    api_key = CheckLine(
        "API key",
        False,
        f"not checked: the gateway refused the request for another reason{DASH}see credentials",
        EXIT_AUTH_FAILED,
    )
    if not clock.ok:
        return [
            CheckLine(
                "credentials",
                False,
                f"not verified: {refused}, and the local clock "
                f"is off{DASH}set the clock right first (see clock), then run check "
                "again",
                EXIT_AUTH_FAILED,
            ),
            api_key,
        ]
    fix = (
        f"check {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}: a pair of the same account, with "
        "access to CLOVA NSML"
    )
    if not credentials.api_key:
        fix += f"; if your gateway asks for an API key, export {API_KEY_ENV} too"
    return [CheckLine("credentials", False, f"{refused}{DASH}{fix}", EXIT_AUTH_FAILED), api_key]


def _clock_line(probe: _Probe) -> CheckLine:
    from .nsml.client import GATEWAY_CLOCK_WINDOW_S as window

    if probe.skew is None:
        if probe.status == 200:  # the signature passed: the clock is inside the window
            return CheckLine(
                "clock",
                True,
                "the gateway sent no Date to compare with; it took "
                f"the signature, so the clock is within {window} s of its own",
            )
        return CheckLine(
            "clock",
            False,
            f"not checked: the gateway sent no Date header{DASH}see credentials",
            EXIT_AUTH_FAILED,
        )
    skew = probe.skew
    off = f"the local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'}"
    if abs(skew) > window:
        return CheckLine(
            "clock",
            False,
            f"{off} the gateway's Date; signatures more than "
            f"{window} s off are refused{DASH}set the clock right (enable NTP, "
            "e.g. timedatectl set-ntp true)",
            EXIT_AUTH_FAILED,
        )
    if abs(skew) > CLOCK_NOTE_S:
        return CheckLine(
            "clock",
            True,
            f"{off} the gateway's Date: within the {window} s "
            "signatures allow, but a synced clock is closer (note: enable NTP "
            "before it drifts further)",
        )
    return CheckLine(
        "clock",
        True,
        f"within {max(abs(skew), CLOCK_RESOLUTION_S):.0f} s of the "
        f"gateway's Date (signatures allow {window} s)",
    )
