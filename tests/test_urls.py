"""redact_url: the database URL as messages and settings show it, with every secret masked.

Before, it was tested only through scans of whole outputs for a leaked password; these pin
what it masks and what it keeps, one URL shape at a time."""

from __future__ import annotations

import pytest
from conftest import write_pairs

from nsml_etl.config import Settings
from nsml_etl.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # user and password: the password goes, the rest stays readable
        (
            "postgresql+psycopg://etl:s3cr3t@db.example:5432/runs",
            "postgresql+psycopg://etl:***@db.example:5432/runs",
        ),
        # a password without a user
        ("postgresql://:s3cr3t@db/runs", "postgresql://:***@db/runs"),
        # percent-encoded characters in the password
        ("mysql+pymysql://etl:s%40cr%3At@db/runs", "mysql+pymysql://etl:***@db/runs"),
        # no password: nothing to mask, nothing changed
        (
            "mysql+pymysql://etl@db/runs?charset=utf8mb4",
            "mysql+pymysql://etl@db/runs?charset=utf8mb4",
        ),
        ("sqlite:///nsml_runs.db", "sqlite:///nsml_runs.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_the_password_is_masked_and_the_rest_kept(url, shown):
    assert redact_url(url) == shown


def test_credential_query_values_are_masked_and_other_parameters_kept():
    shown = redact_url(
        "postgresql://etl@db/runs?password=pw1&sslmode=require"
        "&sslpassword=pw2&api_token=tk3&client_key=ky4"
    )
    for secret in ("pw1", "pw2", "tk3", "ky4"):
        assert secret not in shown
    assert "sslmode=require" in shown
    assert shown.startswith("postgresql://etl@db/runs?")


@pytest.mark.parametrize(
    "url",
    [
        "::bad://etl:s3cr3t@db/runs?password=s3cr3t",  # SQLAlchemy cannot parse it at all
        "postgresql://etl:s3cr3t@[::1/runs?token=s3cr3t",  # it parses, then fails on the port
    ],
)
def test_a_malformed_url_is_masked_without_failing(url):
    shown = redact_url(url)
    assert "s3cr3t" not in shown and "etl:***@" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Regression: an @ left unescaped in the password ended it there; the rest of the
        # password was shown as the host ("ss@127.0.0.1") or port ("w0rd@db").
        ("postgresql://etl:pa@ss@127.0.0.1:1/runs", "postgresql://etl:***@127.0.0.1:1/runs"),
        ("postgresql://etl:p@ss:w0rd@db/runs", "postgresql://etl:***@db/runs"),
        ("postgresql://etl:p@ss/w0rd@db/runs", "postgresql://etl:***@db/runs"),
        # An @ in the user name (user@server, as Azure spells it) is no password.
        ("postgresql://etl@server:s3cr3t@db/runs", "postgresql://etl@server:***@db/runs"),
    ],
)
def test_a_password_holding_an_unescaped_at_is_masked_whole(url, shown):
    assert redact_url(url) == shown


def test_text_that_is_no_url_comes_back_as_it_is():
    assert redact_url("not a url") == "not a url"
    assert redact_url("") == ""


def test_settings_show_the_database_url_redacted():
    settings = Settings(db_url="postgresql://etl:s3cr3t@db/runs?sslpassword=k3y")
    shown = settings.public_dict()["db_url"]
    assert "s3cr3t" not in shown and "k3y" not in shown
    assert shown.startswith("postgresql://etl:***@db/runs")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://etl:pa@ss@127.0.0.1:1/runs",
        "postgresql+psycopg://etl:p@ss:w0rd@127.0.0.1/runs",
    ],
)
def test_a_db_url_with_an_unescaped_at_in_its_password_is_refused_before_connecting(
    run_cli, credentials, simulator, tmp_path, url
):
    """Before, the driver was asked for host 'ss@127.0.0.1' and said so (exit 4), or the parser
    failed on port 'w0rd@127.0.0.1' (exit 70, "a bug"): both showed part of the password."""
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", url, "--base-url", simulator.base_url
    )
    assert result.exit_code == 2, result.output
    assert "is not a database URL" in result.stderr
    assert "percent-encode @, : and / in a password (@ as %40)" in result.stderr
    assert "ss@" not in result.output and "w0rd" not in result.output
    assert simulator.stats.requests == 0
