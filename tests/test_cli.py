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


def _option_help(run_cli, command: str, option: str) -> str:
    """The help text of one option of ``nsml-etl COMMAND --help``, on one line."""
    text = run_cli(command, "--help").stdout
    block = text.split(option, 1)[1].split("\n  -", 1)[0]
    return " ".join(block.split())


def test_help_says_what_each_command_does_with_the_option(run_cli):
    # load and pairs copied export's help: load sends no request, pairs retries list pages.
    assert "request" in _option_help(run_cli, "export", "--verbose")
    assert "request" not in _option_help(run_cli, "load", "--verbose")
    assert "chunk" in _option_help(run_cli, "load", "--verbose")
    assert "chunk" not in _option_help(run_cli, "pairs", "--verbose")
    assert "request" in _option_help(run_cli, "pairs", "--verbose")
    assert "per run before" in _option_help(run_cli, "export", "--max-attempts")
    assert "page of the run list" in _option_help(run_cli, "pairs", "--max-attempts")
