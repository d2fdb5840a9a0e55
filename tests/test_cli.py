"""The CLI's small edges: help texts that fit their command, --quiet, one-line errors."""

from __future__ import annotations

from urllib.parse import urlsplit


def test_simulate_on_a_busy_port_is_one_line_and_exit_2(run_cli, credentials, simulator):
    port = urlsplit(simulator.base_url).port  # the fixture's simulator holds it
    result = run_cli("simulate", "--port", str(port))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: cannot listen on 127.0.0.1:{port}: Address already in "
                             "use; choose another --port (0 picks a free one)\n")
    assert result.stdout == ""
