import re

import pytest

from nsml_etl.config import Settings, credentials_from_env, resolve_settings
from nsml_etl.errors import InputError


def test_defaults():
    assert resolve_settings({}, None, {}) == Settings()


def test_precedence_flags_over_env_over_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('concurrency = 3\ntimeout = 9\nmax-attempts = 2\ntable = "t_file"\n')
    environ = {"NSML_ETL_CONCURRENCY": "5", "NSML_ETL_TABLE": "t_env"}
    settings = resolve_settings({"concurrency": 7}, config, environ)
    assert (settings.concurrency, settings.timeout, settings.max_attempts, settings.table) == (
        7,
        9.0,
        2,
        "t_env",
    )


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"base_url": "ftp://x"}, {}, "--base-url: must be an http(s) URL"),
        ({}, {"NSML_BASE_URL": "https://h/nsml/v1?x=1"}, "NSML_BASE_URL: must not carry"),
        ({}, {"NSML_ETL_CONCURRENCY": "0"}, "NSML_ETL_CONCURRENCY: must be at least 1"),
        ({}, {"NSML_ETL_TIMEOUT": "nan"}, "NSML_ETL_TIMEOUT: must be a positive"),
        ({"table": "Bad-Name"}, {}, "--table: must be 1-63 characters"),
    ],
)
def test_bad_values_name_their_source(flags, environ, message):
    with pytest.raises(InputError, match=re.escape(message)):
        resolve_settings(flags, None, environ)


def test_base_url_trailing_slash_is_dropped():
    settings = resolve_settings({"base_url": "http://127.0.0.1:1/nsml/v1/"}, None, {})
    assert settings.base_url == "http://127.0.0.1:1/nsml/v1"


def test_credentials_from_env_and_repr_hides_secrets():
    creds = credentials_from_env(
        {"NCP_ACCESS_KEY": "AK", "NCP_SECRET_KEY": "SKsecret", "NCP_APIGW_API_KEY": "apikey"}
    )
    assert creds.api_key == "apikey"
    assert "SKsecret" not in repr(creds) and "apikey" not in repr(creds)
    with pytest.raises(InputError, match="NCP_SECRET_KEY is not set"):
        credentials_from_env({"NCP_ACCESS_KEY": "AK"})


def test_public_dict_masks_the_database_password():
    settings = resolve_settings({"db_url": "postgresql://u:hunter2@h/db"}, None, {})
    assert "hunter2" not in str(settings.public_dict())


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).parent.parent / "configs" / "example.toml"
    assert resolve_settings({}, example, {}) == Settings()


@pytest.mark.parametrize(
    ("text", "rate"), [("20", 20.0), ("20/s", 20.0), ("600/min", 10.0), ("0.5/s", 0.5)]
)
def test_rate_limit_forms(text, rate):
    assert resolve_settings({"rate_limit": text}, None, {}).rate_limit == rate


@pytest.mark.parametrize("text", ["fast", "0/s", "-1", "10/hour"])
def test_bad_rate_limit(text):
    with pytest.raises(InputError, match="--rate-limit: must be"):
        resolve_settings({"rate_limit": text}, None, {})


def test_a_command_default_yields_to_every_given_layer(tmp_path):
    """`load` writes bigger chunks by default; a flag, env var or config file still wins."""
    load = {"chunk_size": 4000}
    assert resolve_settings({}, environ={}, defaults=load).chunk_size == 4000
    assert resolve_settings({}, environ={}).chunk_size == Settings().chunk_size
    assert resolve_settings({"chunk_size": 7}, environ={}, defaults=load).chunk_size == 7
    assert resolve_settings({}, environ={"NSML_ETL_CHUNK_SIZE": "9"}, defaults=load).chunk_size == 9
    config = tmp_path / "etl.toml"
    config.write_text("chunk_size = 11\n")
    assert resolve_settings({}, config, environ={}, defaults=load).chunk_size == 11
