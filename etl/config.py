"""One settings object, resolved as: defaults < ``--config`` TOML file < environment < flags.

Secrets (the NCP keys) come from the environment only: a config file that names one is
rejected, so keys never end up committed next to a crontab.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import EtlError, InputError
from .files import read_toml
from .tablenames import (
    CATALOG_PREFIXES,
    DEFAULT_TABLE,
    RESERVED_TABLES,
    SEPARATOR,
    default_view_names,
)

DEFAULT_BASE_URL = "https://nsml.apigw.ntruss.com/nsml/v1"
DEFAULT_DB_URL = "sqlite:///nsml_runs.db"
# The run list's times carry no zone; NCP is run from Korea.
DEFAULT_LIST_TIMEZONE = "Asia/Seoul"
# Env columns per runs table, by default (--max-env-columns). The fixed columns plus this many
# fit every database's limits with room for undocumented fields. The tightest is MariaDB:
# InnoDB rows hold 8,126 bytes, keep every text value of up to 40 bytes in the row, and the
# key columns always; measured with every value 40 bytes long, 138 text columns besides the
# fixed ones fit when the project id and run name are 255 four-byte characters each (175 with
# ASCII keys), so 100 leaves room for 38 undocumented fields in the worst case. PostgreSQL's
# 8,160-byte rows fit about 420 such columns, SQLite 2,000 columns.
DEFAULT_MAX_ENV_COLUMNS = 100

# The longest wait any setting may ask for (a timeout, a backoff, a Retry-After cap, the gap
# between two requests of a --rate-limit): a week, far beyond any that makes sense, and far
# below what its users take: threading's and socket waits (threading.TIMEOUT_MAX, about 292
# years; a socket timeout in nanoseconds overflows past 9.2e9 s: --timeout 1e10 crashed) and
# datetime arithmetic (year 9999).
MAX_SECONDS = 7 * 24 * 3600

# A table name that needs no quoting anywhere and fits every database's identifier limit.
TABLE_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

ACCESS_KEY_ENV = "NCP_ACCESS_KEY"
SECRET_KEY_ENV = "NCP_SECRET_KEY"
API_KEY_ENV = "NCP_APIGW_API_KEY"

# Config-file keys that look like a secret: refused with a pointer to the environment.
SECRET_KEY_NAMES = frozenset(
    {"access_key", "secret_key", "api_key", "apigw_api_key", "password", "secret", "token"}
)


@dataclass(frozen=True)
class Credentials:
    """NCP keys. ``repr`` hides the secret parts so they cannot leak through logs."""

    access_key: str
    secret_key: str
    api_key: str | None = None

    def __repr__(self) -> str:
        api_key = "'***'" if self.api_key else "None"  # whether one is set, never its value
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', api_key={api_key})"


def missing_credentials(environ: Mapping[str, str] | None = None) -> list[str]:
    """The variables of the required NCP keys that are unset or blank."""
    environ = os.environ if environ is None else environ
    return [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if not environ.get(name, "").strip()]


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    """Read the NCP keys; missing ones are one :class:`InputError` naming every variable."""
    environ = os.environ if environ is None else environ
    missing = missing_credentials(environ)
    if missing:
        kinds = " and ".join(name.split("_")[1].lower() for name in missing)
        plural = len(missing) > 1
        raise InputError(
            f"{' and '.join(missing)} {'are' if plural else 'is'} not set: export the NCP "
            f"{kinds} key{'s' if plural else ''} in the environment (keys are never read "
            "from flags or files)"
        )
    return Credentials(
        access_key=environ[ACCESS_KEY_ENV].strip(),
        secret_key=environ[SECRET_KEY_ENV].strip(),
        api_key=environ.get(API_KEY_ENV, "").strip() or None,
    )


def _whole_number(value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if number < least:
        raise ValueError(f"must be at least {least}")
    return number


def _positive_int(value: Any) -> int:
    return _whole_number(value, least=1)


def _non_negative_int(value: Any) -> int:
    return _whole_number(value, least=0)


def _seconds(value: Any, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        qualifier = "zero or a positive" if allow_zero else "a positive"
        raise ValueError(f"must be {qualifier} number of seconds")
    if number > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS} seconds (a week)")
    return number


def _positive_float(value: Any) -> float:
    return _seconds(value, allow_zero=False)


def _non_negative_float(value: Any) -> float:
    return _seconds(value, allow_zero=True)


def _rate(value: Any) -> float:
    """``20``, ``20/s`` or ``1200/min``: requests per second."""
    text = str(value).strip().lower().replace(" ", "")
    per = 1.0
    for suffix, seconds in (("/s", 1.0), ("/sec", 1.0), ("/min", 60.0), ("/m", 60.0)):
        if text.endswith(suffix):
            text, per = text[: -len(suffix)], seconds
            break
    try:
        number = float(text)
    except ValueError:
        raise ValueError("must be a rate such as 20/s or 600/min") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a positive rate such as 20/s")
    if per / number > MAX_SECONDS:  # the wait between two requests
        raise ValueError(f"must allow at least one request in {MAX_SECONDS} seconds (a week)")
    return number / per


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as Asia/Seoul or UTC") from None
    return str(value)


# How a yes/no setting may be written in the environment or a config file (TOML's own true and
# false too); any other text is refused rather than guessed.
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _db_url(value: Any) -> str:
    from .urls import (
        file_database_keeps_nothing,  # local: config must not import SQLAlchemy eagerly
    )

    text = _text(value)
    reason = file_database_keeps_nothing(text)
    if reason:
        raise ValueError(reason)
    return text


def _table_name(value: Any) -> str:
    if not isinstance(value, str) or not TABLE_NAME_RE.fullmatch(value):
        raise ValueError(
            "must be 1-63 characters of lower-case letters, digits and underscores, "
            "not starting with a digit (a name that needs no quoting in any database)"
        )
    if value.startswith(CATALOG_PREFIXES):
        raise ValueError(
            f"{value!r} starts with {value.split('_')[0]}_, which the database keeps for its "
            f"own catalog (names starting {' or '.join(CATALOG_PREFIXES)} are refused); "
            "choose another name"
        )
    if value in RESERVED_TABLES:
        raise ValueError(f"{value!r} is one of nsml-etl's own tables; choose another name")
    if value in default_view_names():
        raise ValueError(
            f"{value!r} is the name of one of nsml-etl's reporting views "
            "(sql/); choose another name"
        )
    if SEPARATOR in value:
        raise ValueError(
            f"must not contain {SEPARATOR!r}: reporting views of other tables are "
            f"named <table>{SEPARATOR}<view>, and a table must never take one"
        )
    return value


def _base_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an http(s) URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as " + DEFAULT_BASE_URL)
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value.strip().rstrip("/")


def _ca_bundle(value: Any) -> str:
    if not isinstance(value, str) or not Path(value).is_file():
        raise ValueError("must be the path of an existing CA bundle file (PEM)")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI, the environment and config files know it."""

    name: str
    default: Any
    parse: Callable[[Any], Any]
    env: str
    flag: str
    metavar: str
    help: str
    # A yes/no setting: its flag takes no value (given means yes).
    is_flag: bool = False


def _setting(
    default: Any,
    parse: Callable[[Any], Any],
    env: str,
    flag: str,
    metavar: str,
    help: str,
    is_flag: bool = False,
) -> Any:
    """A field of :class:`Settings` that carries the rest of its :class:`Setting`."""
    return field(
        default=default,
        metadata={
            "parse": parse,
            "env": env,
            "flag": flag,
            "metavar": metavar,
            "help": help,
            "is_flag": is_flag,
        },
    )


@dataclass(frozen=True)
class Settings:
    """Every setting, and the one table of them: each field's default, parser, environment
    variable, flag and help make :data:`SETTINGS`, from which the CLI builds its options
    (``cli.settings_options``) and :func:`resolve_settings` reads files, env and flags."""

    db_url: str = _setting(
        DEFAULT_DB_URL,
        _db_url,
        "NSML_ETL_DB_URL",
        "--db",
        "URL",
        "SQLAlchemy URL of the target database.",
    )
    table: str = _setting(
        DEFAULT_TABLE, _table_name, "NSML_ETL_TABLE", "--table", "NAME", "Table the runs land in."
    )
    base_url: str = _setting(
        DEFAULT_BASE_URL,
        _base_url,
        "NSML_BASE_URL",
        "--base-url",
        "URL",
        "NSML API base URL; its path prefix is part of what is signed.",
    )
    concurrency: int = _setting(
        8,
        _positive_int,
        "NSML_ETL_CONCURRENCY",
        "--concurrency",
        "N",
        "Parallel API requests (one HTTP session per worker).",
    )
    timeout: float = _setting(
        30.0,
        _positive_float,
        "NSML_ETL_TIMEOUT",
        "--timeout",
        "SECONDS",
        "Seconds for each API response as a whole (headers and body, not per read).",
    )
    max_attempts: int = _setting(
        5,
        _positive_int,
        "NSML_ETL_MAX_ATTEMPTS",
        "--max-attempts",
        "N",
        "Attempts per run before it is recorded as failed.",
    )
    chunk_size: int = _setting(
        500,
        _positive_int,
        "NSML_ETL_CHUNK_SIZE",
        "--chunk-size",
        "N",
        "Runs written per database transaction.",
    )
    max_env_columns: int = _setting(
        DEFAULT_MAX_ENV_COLUMNS,
        _non_negative_int,
        "NSML_ETL_MAX_ENV_COLUMNS",
        "--max-env-columns",
        "N",
        "Env keys that get a column of their own in the table; the others stay in envs and the "
        "nsml_run_envs view. Raising it later gives waiting keys columns.",
    )
    backoff_initial: float = _setting(
        0.5,
        _non_negative_float,
        "NSML_ETL_BACKOFF_INITIAL",
        "--backoff-initial",
        "SECONDS",
        "First retry backoff ceiling in seconds (doubles per attempt).",
    )
    backoff_max: float = _setting(
        30.0,
        _non_negative_float,
        "NSML_ETL_BACKOFF_MAX",
        "--backoff-max",
        "SECONDS",
        "Largest backoff between two attempts, in seconds.",
    )
    retry_after_max: float = _setting(
        60.0,
        _non_negative_float,
        "NSML_ETL_RETRY_AFTER_MAX",
        "--retry-after-max",
        "SECONDS",
        "Cap on a server's Retry-After, in seconds.",
    )
    rate_limit: float | None = _setting(
        None,
        _rate,
        "NSML_ETL_RATE_LIMIT",
        "--rate-limit",
        "RATE",
        "Cap on API requests per second across all workers, e.g. 20/s or 600/min.",
    )
    list_timezone: str = _setting(
        DEFAULT_LIST_TIMEZONE,
        _timezone,
        "NSML_ETL_LIST_TIMEZONE",
        "--list-timezone",
        "ZONE",
        "Zone of the run list's createTime/updateTime (not documented by NCP); stored as UTC.",
    )
    timezone: str = _setting(
        DEFAULT_LIST_TIMEZONE,
        _timezone,
        "NSML_ETL_TIMEZONE",
        "--timezone",
        "ZONE",
        "Zone of the report's days, weeks and months (--since, --until, --period): each day "
        "runs from 00:00 to 00:00 there, daylight saving time included.",
    )
    ca_bundle: str | None = _setting(
        None,
        _ca_bundle,
        "NSML_ETL_CA_BUNDLE",
        "--ca-bundle",
        "PATH",
        "CA bundle for a TLS-inspecting proxy (REQUESTS_CA_BUNDLE is honoured too); "
        "verification is never turned off.",
    )
    metrics_file: str | None = _setting(
        None,
        _text,
        "NSML_ETL_METRICS_FILE",
        "--metrics-file",
        "PATH",
        "Rewrite this file at the end of every run, whatever its outcome, with the run's "
        "metrics in the Prometheus text format (for node_exporter's textfile collector: "
        "name it *.prom).",
    )

    nodes: bool = _setting(
        False,
        _yes_no,
        "NSML_ETL_NODES",
        "--nodes",
        "",
        "Also fetch each run's node list (GET .../runs/{runName}/nodes) into nsml_run_nodes: "
        "at least two more requests per run.",
        is_flag=True,
    )

    def public_dict(self) -> dict[str, Any]:
        """The settings with the database password masked, for logs and summaries."""
        from .urls import redact_url  # local: config must not import SQLAlchemy eagerly

        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["db_url"] = redact_url(self.db_url)
        return values


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, default=f.default, **f.metadata) for f in fields(Settings)
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and check a TOML config file: known keys only, no secrets."""
    data = read_toml(path, "config file")
    for key in data:
        normalized = key.replace("-", "_").lower()
        if normalized in SECRET_KEY_NAMES or normalized.startswith("ncp_"):
            raise InputError(
                f"{path}: key {key!r} looks like a secret; secrets are read from the "
                f"environment only ({ACCESS_KEY_ENV}, {SECRET_KEY_ENV}, {API_KEY_ENV})"
            )
        if normalized not in SETTINGS_BY_NAME:
            known = ", ".join(s.name for s in SETTINGS)
            raise InputError(f"{path}: unknown key {key!r} (known keys: {known})")
    if isinstance(data.get("db_url"), str) and _url_has_password(data["db_url"]):
        raise InputError(
            f"{path}: db_url holds a password; put that URL in NSML_ETL_DB_URL instead "
            "so the password stays out of files"
        )
    return {key.replace("-", "_").lower(): value for key, value in data.items()}


def _url_has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False


def flag_label(setting: Setting) -> str:
    return setting.flag


def flag_message(error: EtlError) -> str:
    """``error``'s message as the CLI says it: one about a setting names its flag, one that
    names the Python API's arguments has the CLI's own words (``cli_message``)."""
    if error.cli_message is not None:
        return error.cli_message
    if error.setting is None or error.setting not in SETTINGS_BY_NAME:
        return str(error)
    return f"{SETTINGS_BY_NAME[error.setting].flag} {error.detail}"


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    label: Callable[[Setting], str] = flag_label,
) -> Settings:
    """Merge the four layers; each bad value names where it came from (a value in ``flags``
    by ``label``: the flag for the CLI, the argument's name for the Python API). ``defaults``
    replaces built-in defaults for one command (``load`` writes bigger chunks)."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    from_file = read_config_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in flags:
            raw, source = flags[setting.name], label(setting)
        elif environ.get(setting.env, "") != "":
            raw, source = environ[setting.env], setting.env
        elif setting.name in from_file:
            raw, source = from_file[setting.name], f"{config_file}: {setting.name}"
        else:
            values[setting.name] = (defaults or {}).get(setting.name, setting.default)
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise InputError(f"{source}: {exc} (got {raw!r})") from None
    if values["backoff_max"] < values["backoff_initial"]:
        values["backoff_max"] = values["backoff_initial"]
    return Settings(**values)


def argument_label(setting: Setting) -> str:
    """A setting as the Python API names it: its keyword argument."""
    return setting.name


def settings_from_arguments(
    function: str,
    settings: Settings | None,
    arguments: Mapping[str, Any],
    config_file: str | os.PathLike[str] | None,
    names: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """The settings of one call of the Python API's ``function``: its keyword ``arguments``
    (each one of ``names``, every setting by default; None means not given) beat their
    environment variables, which beat ``config_file``, which beats the default; ``settings``
    (a :class:`Settings`, as the CLI passes the one it resolved) replaces them all, checked as
    arguments are. A name that is no setting of ``function`` is an :class:`InputError`."""
    taken = tuple(SETTINGS_BY_NAME) if names is None else tuple(names)
    unknown = [name for name in arguments if name not in taken]
    if unknown:
        raise InputError(
            f"{function}() takes no argument {unknown[0]}= (its settings: {', '.join(taken)})"
        )
    given = {
        name: os.fspath(value) if isinstance(value, os.PathLike) else value
        for name, value in arguments.items()
        if value is not None
    }
    if settings is None:
        return resolve_settings(
            given,
            Path(config_file) if config_file else None,
            defaults=defaults,
            label=argument_label,
        )
    if not isinstance(settings, Settings):
        raise InputError(f"settings must be a nsml_etl.Settings, got {type(settings).__name__}")
    if given or config_file:
        names_given = ", ".join([*given, *(["config_file"] if config_file else [])])
        raise InputError(
            f"settings= replaces every setting argument; do not give {names_given} as well"
        )
    # Checked as arguments are: a Settings made by hand skipped the checks (the CLI's passes).
    return resolve_settings(dataclasses.asdict(settings), environ={}, label=argument_label)


def given_credentials(credentials: Credentials | None) -> Credentials:
    """``credentials`` checked, or by default those of the environment."""
    if credentials is None:
        return credentials_from_env()
    if not isinstance(credentials, Credentials):
        raise InputError(
            "credentials must be a nsml_etl.Credentials(access_key=..., "
            f"secret_key=..., api_key=None), got {type(credentials).__name__}"
        )
    for name in ("access_key", "secret_key"):
        value = getattr(credentials, name)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"credentials.{name} is empty: give the NCP {name.split('_')[0]} key")
    return credentials
