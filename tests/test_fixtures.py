"""The test fixtures themselves, where a user of the suite depends on them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import DB_PREFIX_ENV, _server_database


def test_server_databases_take_their_name_prefix_from_the_environment(monkeypatch):
    # A shared server may allow creating databases under one prefix only.
    monkeypatch.setenv(DB_PREFIX_ENV, "ci_runner_7_")
    databases = _server_database("postgresql")
    url = next(databases)
    try:
        name = sa.make_url(url).database
        assert name is not None and name.startswith("ci_runner_7_")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == name
        engine.dispose()
    finally:
        databases.close()  # dropped


def test_a_prefix_that_is_not_a_plain_name_is_refused(monkeypatch):
    monkeypatch.setenv(DB_PREFIX_ENV, "x; DROP DATABASE postgres; --")
    with pytest.raises(pytest.UsageError, match=DB_PREFIX_ENV):
        next(_server_database("postgresql"))
