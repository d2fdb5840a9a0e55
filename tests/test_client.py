"""Retry decisions and request building, against the simulator with an injected sleep."""

from __future__ import annotations

import socket
import ssl
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme
from conftest import ACCESS_KEY, SECRET_KEY, fetch_rows, write_pairs

from nsml_etl.config import Credentials, Settings
from nsml_etl.errors import ApiError, AuthenticationError, RunFetchFailed
from nsml_etl.nsml.client import (
    NsmlClient,
    WaitRetryAfter,
    interpret,
    is_retryable,
    parse_retry_after,
)
from nsml_etl.pairs import Pair
from nsml_etl.testing.simulator import Simulator, SimulatorConfig

CREDS = Credentials(ACCESS_KEY, SECRET_KEY)


def client_for(base_url, sleeps, **settings):
    settings = Settings(base_url=base_url, timeout=settings.pop("timeout", 0.5), **settings)
    return NsmlClient(settings, CREDS, sleep=sleeps.append)


def response(status, body=b"", headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    resp.headers.update(headers or {})
    resp.reason = "reason"
    return resp


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_gateway_trouble_is_retried(status):
    with pytest.raises(ApiError) as info:
        interpret(response(status, b'{"error": {"errorCode": "400", "message": "m"}}'))
    assert is_retryable(info.value)


@pytest.mark.parametrize("status", [400, 404, 405, 302])
def test_client_errors_are_not_retried(status):
    with pytest.raises(ApiError) as info:
        interpret(response(status, b"<html>nope</html>", {"Content-Type": "text/html"}))
    assert not is_retryable(info.value)
    assert "non-JSON text/html body" in info.value.message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_raise_authentication_error(status):
    body = b'{"error": {"errorCode": "200", "message": "Authentication Failed"}}'
    with pytest.raises(AuthenticationError, match="errorCode 200: Authentication Failed"):
        interpret(response(status, body))


def test_clock_skew_is_named():
    body = b'{"error": {"errorCode": "200", "message": "Authentication Failed"}}'
    server_time = 1_700_000_000
    headers = {"Date": formatdate(server_time, usegmt=True)}
    with pytest.raises(AuthenticationError, match=r"local clock is off by \+900 seconds"):
        interpret(response(401, body, headers), now=lambda: server_time + 900)
    with pytest.raises(AuthenticationError) as info:  # within the window: not the clock
        interpret(response(401, body, headers), now=lambda: server_time + 30)
    assert "clock" not in str(info.value)


@pytest.mark.parametrize("body", [b'{"runName": "1"', b"<html>ok</html>", b"", b"\xff\xfe"])
def test_incomplete_200_is_retried(body):
    with pytest.raises(ApiError) as info:
        interpret(response(200, body))
    assert is_retryable(info.value)


def test_valid_json_of_the_wrong_shape_is_returned_for_the_transform_to_judge():
    assert interpret(response(200, b"[1, 2]")) == [1, 2]


def test_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(formatdate(1000 + 12, usegmt=True), now=lambda: 1000) == 12.0
    assert parse_retry_after(formatdate(900, usegmt=True), now=lambda: 1000) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


class _State:
    def __init__(self, exc):
        self.outcome = type("F", (), {"exception": lambda _self: exc})()


def test_wait_honours_retry_after_capped_and_never_below_backoff():
    wait = WaitRetryAfter(lambda state: 0.25, cap=10)
    assert wait(_State(ApiError("x", 429, retryable=True, retry_after=3))) == 3
    assert wait(_State(ApiError("x", 429, retryable=True, retry_after=3600))) == 10
    assert wait(_State(ApiError("x", 500, retryable=True))) == 0.25


@pytest.mark.parametrize(
    "kind",
    [
        "429",
        "429-no-retry-after",
        "429-no-code",
        "500",
        "502-html",
        "503",
        "504",
        "drop",
        "truncate",
        "slow",
        "trickle",
    ],
)
def test_each_fault_kind_is_retried_with_fresh_signatures(make_simulator, kind):
    # trickle: a byte every 0.1 s would take a minute for the body; --timeout 0.4 cuts it
    sim = make_simulator(
        projects=1,
        runs_per_project=1,
        fault_rate=1.0,
        fault_kinds=(kind,),
        fault_streak=2,
        retry_after=2,
        slow_seconds=0.8,
        trickle_seconds=0.1,
    )
    sleeps: list[float] = []
    pair = Pair(*sim.pairs()[0])
    result = client_for(sim.base_url, sleeps, timeout=0.4, backoff_initial=0.01).get_run(pair)
    assert result.body == sim.run(*pair)
    assert result.attempts == 3 and len(sleeps) == 2
    assert sim.stats.auth_failures == 0  # every retry carried a new, valid signature
    if kind == "429":
        assert min(sleeps) >= 2  # Retry-After honoured (slept through the injected sleep)
    else:
        assert max(sleeps) <= 0.02


def test_gives_up_after_max_attempts(make_simulator):
    sim = make_simulator(projects=1, runs_per_project=1, fault_rate=1.0, fault_kinds=("503",))
    sleeps: list[float] = []
    with pytest.raises(RunFetchFailed) as info:
        client_for(sim.base_url, sleeps, max_attempts=4).get_run(Pair(*sim.pairs()[0]))
    assert info.value.attempts == 4 and sim.stats.requests == 4 and len(sleeps) == 3
    assert "HTTP 503" in str(info.value)


def test_not_found_and_auth_are_never_retried(make_simulator):
    sim = make_simulator(projects=1, runs_per_project=1)
    sleeps: list[float] = []
    client = client_for(sim.base_url, sleeps)
    with pytest.raises(RunFetchFailed) as info:
        client.get_run(Pair("nope", "1"))
    assert info.value.attempts == 1 and info.value.error.status == 404
    bad = NsmlClient(
        Settings(base_url=sim.base_url), Credentials(ACCESS_KEY, "wrong"), sleep=sleeps.append
    )
    with pytest.raises(AuthenticationError):
        bad.get_run(Pair(*sim.pairs()[0]))
    assert sim.stats.requests == 2 and sleeps == []


def test_stale_timestamp_is_rejected_by_the_simulator(make_simulator):
    sim = make_simulator(projects=1, runs_per_project=1, clock_offset=-600)
    with pytest.raises(AuthenticationError, match="5-minute window.*clock is off by"):
        client_for(sim.base_url, []).get_run(Pair(*sim.pairs()[0]))


@pytest.mark.parametrize("run_name", ["2/../x", "..%2F", "a b", "%2F", "한국", "1?page=2"])
def test_path_parameters_are_percent_encoded_and_signed_as_sent(make_simulator, run_name):
    sim = make_simulator(projects=1, runs_per_project=0)
    project_id = "proj"
    sim.put_run(project_id, run_name, {"runName": run_name, "projectId": project_id})
    result = client_for(sim.base_url, []).get_run(Pair(project_id, run_name))
    assert result.body["runName"] == run_name
    (path,) = sim.stats.by_path
    assert path.startswith("/nsml/v1/projects/proj/runs/") and path.count("/") == 6
    assert sim.stats.auth_failures == 0


def test_redirects_are_not_followed():
    hits: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/nsml/v1"
        with pytest.raises(RunFetchFailed, match="HTTP 302"):
            client_for(base, []).get_run(Pair("p", "1"))
        assert hits == ["/nsml/v1/projects/p/runs/1"]
    finally:
        server.shutdown()
        server.server_close()


def test_tls_is_verified_and_a_ca_bundle_is_honoured(run_cli, credentials, tmp_path, sqlite_url):
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "corporate-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    sim = Simulator(
        SimulatorConfig(
            access_key=ACCESS_KEY, secret_key=SECRET_KEY, projects=1, runs_per_project=2
        ),
        tls=server_context,
    ).start()
    try:
        pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
        args = [
            "export",
            "--pairs",
            str(pairs_file),
            "--db",
            sqlite_url,
            "--base-url",
            sim.base_url,
        ]
        refused = run_cli(*args)
        assert refused.exit_code == 1
        where = sim.base_url.split("/")[2]  # host:port, named in the reason
        assert f"TLS certificate verification failed ({where})" in refused.stdout
        assert sim.stats.requests == 0  # nothing was sent over an unverified connection
        accepted = run_cli(*args, "--ca-bundle", str(bundle))
        assert accepted.exit_code == 0, accepted.output
        assert run_cli(*args, "--ca-bundle", str(tmp_path / "nope.pem")).exit_code == 2
    finally:
        sim.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_api_is_named_with_host_port_and_reason(
    run_cli, credentials, sqlite_url, tmp_path
):
    # Regression: every pair failed with "transport error: ConnectionError", naming neither
    # where nor why; and the listing repeated the reason for every run: it is said once.
    port = _closed_port()
    pairs = write_pairs(tmp_path / "pairs.csv", [("p", "1"), ("p", "2")])
    base = f"http://127.0.0.1:{port}/nsml/v1"
    result = run_cli(
        "export", "--pairs", str(pairs), "--db", sqlite_url, "--base-url", base,
        "--max-attempts", "1",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    reason = f"transport error: connection refused (127.0.0.1:{port})"
    assert result.stdout.count(reason) == 1
    # The pairs are fetched concurrently: their order under the shared reason varies.
    assert f"Failed pairs (2):\n  2 pairs: {reason}\n" in result.stdout
    assert "    p\t1\t[1 attempt]\n" in result.stdout and "    p\t2\t[1 attempt]\n" in result.stdout
    failures = fetch_rows(sqlite_url, "SELECT message FROM nsml_export_failures")
    assert [f["message"] for f in failures] == [reason, reason]

    listed = run_cli(
        "export", "--all", "--db", sqlite_url, "--base-url", base, "--max-attempts", "1"
    )
    assert listed.exit_code == 1
    assert f"Error: run list page 1: {reason}" in listed.stderr

    unknown = run_cli(
        "export", "--all", "--db", sqlite_url, "--max-attempts", "1",
        "--base-url", "http://no-such-host.invalid/nsml/v1",
    )  # fmt: skip
    assert unknown.exit_code == 1
    assert "transport error: name not resolved (no-such-host.invalid:80)" in unknown.stderr
