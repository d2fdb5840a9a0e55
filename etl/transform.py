"""Run JSON -> flat records -> DataFrame.

A run is flattened once, when it arrives (:func:`flatten_run`): documented fields to their
columns, ``envs`` to JSON text plus one value per key, undocumented top-level fields kept by
name. Column names for env keys and extra fields come from the database's mapping tables, so
the frame for a chunk is built later (:func:`build_frame`) from already-flattened records.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from . import jsontext
from .errors import RunShapeError
from .model import FlatNode, Pair, RunToFetch

# Documented run fields (API name -> column), in table order after the key columns.
DOCUMENTED_FIELDS: dict[str, str] = {
    "projectId": "project_id",
    "runName": "run_name",
    "projectName": "project_name",
    "status": "status",
    "creator": "creator",
    "engFullName": "eng_full_name",
    "gpuSvrCode": "gpu_svr_code",
    "imageType": "image_type",
    "imagePath": "image_path",
    "command": "command",
    "note": "note",
}
ENVS_FIELD = "envs"
# create_time/update_time come from the run list (Get run has no times); an export that did
# not list the run leaves the stored ones alone (see warehouse.writer._merge_stage).
LIST_TIME_COLUMNS = ("create_time", "update_time")
# "fields": every undocumented top-level field, as a JSON object (like envs), so that a field
# without a column of its own (beyond MAX_FIELD_COLUMNS) is never lost.
FIELDS_COLUMN = "fields"
# When an export found the stored run deleted upstream (Get run answered 404); every fetch that
# finds the run writes NULL, so a run that answers again is no longer gone.
GONE_COLUMN = "gone_at"
CORE_COLUMNS: tuple[str, ...] = (
    *DOCUMENTED_FIELDS.values(),
    "envs",
    FIELDS_COLUMN,
    "fetched_at",
    *LIST_TIME_COLUMNS,
    GONE_COLUMN,
)
KEY_COLUMNS = ("project_id", "run_name")
# The documented run statuses, in the order a run goes through them.
RUN_PENDING = "RUN_STATE_PENDING"
RUN_IN_PROGRESS = "RUN_STATE_IN_PROGRESS"
RUN_COMPLETED = "RUN_STATE_COMPLETED"
RUN_FAILED = "RUN_STATE_FAILED"
RUN_STOPPED = "RUN_STATE_STOPPED"
RUN_CANCELED = "RUN_STATE_CANCELED"
RUN_STATUSES = (RUN_PENDING, RUN_IN_PROGRESS, RUN_COMPLETED, RUN_FAILED, RUN_STOPPED, RUN_CANCELED)
# Statuses a run never leaves: --skip-finished does not fetch runs stored with one of these.
TERMINAL_STATUSES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_STOPPED, RUN_CANCELED})
# Largest value a BIGINT column holds, and its digits.
_BIGINT_MAX = 2**63 - 1
_BIGINT_DIGITS = len(str(_BIGINT_MAX))
# An integer as text: a sign, then ASCII digits (str.isdigit() also takes "²", which int()
# refuses); leading zeros are skipped in counting the digits.
_INTEGER_TEXT = re.compile(r"[+-]?0*([0-9]+)", re.ASCII)
# Characters of a value quoted in a message.
PREVIEW_CHARS = 80


@dataclass(slots=True)
class FlatRun:
    """One run, flattened: fixed columns, env values by key, extra fields by API name."""

    pair: Pair
    columns: dict[str, Any]
    env: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, str | None] = field(default_factory=dict)
    # Whether a text value, env key or field name holds U+0000, which PostgreSQL text cannot.
    has_nul: bool = False
    # Where it came from when that is not its pair alone (a load's FILE:LINE), for messages.
    where: str | None = None
    # The run's node list (export --nodes, or an archive that carries it); None: not fetched,
    # or its fetch failed, and the stored nodes are left as they are.
    nodes: list[FlatNode] | None = None


def _check_unicode(text: str, what: str) -> str:
    # A lone surrogate (legal in JSON escapes) cannot be stored as UTF-8 by any database.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RunShapeError(f"{what} holds a lone UTF-16 surrogate") from None
    return text


def as_text(value: Any, what: str) -> str | None:
    """A JSON value as column text: strings as they are, anything else as its JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return _check_unicode(value, what)
    # Spaced, as stored since the first release; numbers keep their literal (1e400, 1.50).
    return _check_unicode(jsontext.dumps(value, compact=False), what)


def as_integer(value: Any, what: str) -> int | None:
    """An integer column: ints, integral floats and digit strings within BIGINT; anything else
    is refused (:class:`RunShapeError`)."""
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (digits := _INTEGER_TEXT.fullmatch(value.strip())):
        # Measured before int(): it refuses more than 4300 digits, and BIGINT holds 19 anyway.
        if len(digits[1]) <= _BIGINT_DIGITS:
            number = int(value.strip())
    if number is None or abs(number) > _BIGINT_MAX:
        raise RunShapeError(f"{what} is {preview(value)}, expected an integer")
    return number


def preview(value: Any) -> str:
    """A value as JSON cut to a message's length (a string is cut before it is encoded), a
    lone surrogate as its escape: the message is stored, and no database stores one."""
    if isinstance(value, str):
        value = value[:PREVIEW_CHARS]
    text = jsontext.dumps(value)[:PREVIEW_CHARS]
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# Documented fields stored as text (gpuSvrCode is the one integer).
_TEXT_FIELDS = tuple(
    (api, column) for api, column in DOCUMENTED_FIELDS.items() if column != "gpu_svr_code"
)
_KNOWN_FIELDS = frozenset((*DOCUMENTED_FIELDS, ENVS_FIELD))


class _InexactNumber(Exception):
    """A value to store as text holds a float parsed without its literal."""


def flatten_run(
    body: Any,
    pair: Pair,
    fetched_at: datetime,
    exact_body: Callable[[], Any] | None = None,
    listed: RunToFetch | None = None,
) -> FlatRun:
    """Flatten one Get-run response for ``pair``; raises :class:`RunShapeError` to reject it.
    For any value :func:`jsontext.loads` returns, that is all it does: a FlatRun or a
    RunShapeError with the reason, nothing else (``tests/test_malformed.py`` holds it to that).

    ``exact_body`` parses the same response again keeping every number's literal
    (:func:`jsontext.loads_exact`); it is called only when a float is met in a value stored as
    text, so ``1.50`` stays ``1.50`` without an exact parse of every run. ``listed`` gives the
    run list's times (Get run has none); without it they are NULL, which the upsert reads as
    "keep the stored ones".
    """
    if jsontext.deeper_than(body):
        # Refused before any recursive walk (the encoders, has_float) could overflow the stack.
        raise RunShapeError(f"response is {jsontext.TooDeep()}")
    try:
        run = _flatten(body, pair, fetched_at, check_floats=exact_body is not None)
    except _InexactNumber:
        assert exact_body is not None
        run = _flatten(exact_body(), pair, fetched_at, check_floats=False)
    if listed is not None:
        run.columns["create_time"] = listed.create_time
        run.columns["update_time"] = listed.update_time
    return run


def _flatten(body: Any, pair: Pair, fetched_at: datetime, check_floats: bool) -> FlatRun:
    """This runs once per run on every export and load, so plain ASCII strings (nearly every
    value) take a short path and env values are copied only when one is not a string; only
    those slow paths look for floats (``check_floats``)."""
    if not isinstance(body, dict):
        raise RunShapeError(f"response is {_type_name(body)}, expected a run object")
    get = body.get
    for api_name, requested in (("projectId", pair.project_id), ("runName", pair.run_name)):
        sent = get(api_name)
        if sent is not None and sent != requested and as_text(sent, api_name) != requested:
            raise RunShapeError(
                f"response is for {api_name} {str(sent)[:80]!r}, not the requested {requested!r}"
            )
    columns: dict[str, Any] = {}
    has_nul = False
    for api_name, column in _TEXT_FIELDS:
        value: Any = get(api_name)
        if value is not None:
            if not (type(value) is str and value.isascii()):
                if check_floats and jsontext.has_inexact_float(value):
                    raise _InexactNumber
                value = as_text(value, api_name)
            has_nul = has_nul or "\x00" in value
        columns[column] = value
    columns["gpu_svr_code"] = as_integer(get("gpuSvrCode"), "gpuSvrCode")
    columns["project_id"], columns["run_name"] = pair.project_id, pair.run_name

    envs = get(ENVS_FIELD)
    env: dict[str, str | None] = {}
    if envs is None:
        columns["envs"] = None
    elif isinstance(envs, dict):
        strings_only = {*map(type, envs.values())} <= {str}
        if not strings_only and check_floats and jsontext.has_inexact_float(envs):
            raise _InexactNumber
        # One check of the JSON text covers every key and value (the hot path of a load).
        columns["envs"] = _check_unicode(
            jsontext.dumps_object(envs, strings_only=strings_only), "envs"
        )
        env = envs if strings_only else {key: as_text(value, key) for key, value in envs.items()}
        # JSON writes U+0000 as the escape \u0000, in a key or a value alike.
        has_nul = has_nul or "\\u0000" in columns["envs"]
    else:
        raise RunShapeError(f"envs is {_type_name(envs)}, expected an object")
    columns["fetched_at"] = fetched_at
    columns["create_time"] = columns["update_time"] = columns[GONE_COLUMN] = None

    extra: dict[str, str | None] = {}
    columns[FIELDS_COLUMN] = None
    if body.keys() - _KNOWN_FIELDS:
        undocumented = {name: value for name, value in body.items() if name not in _KNOWN_FIELDS}
        if check_floats and jsontext.has_inexact_float(undocumented):
            raise _InexactNumber
        columns[FIELDS_COLUMN] = _check_unicode(jsontext.dumps(undocumented), "fields")
        extra = {name: as_text(value, name) for name, value in undocumented.items()}
        has_nul = has_nul or "\\u0000" in columns[FIELDS_COLUMN]
    return FlatRun(pair, columns, env, extra, has_nul)


# Columns that record when we looked, not what the run is: a change in them is no new version.
OBSERVATION_COLUMNS = ("fetched_at", *LIST_TIME_COLUMNS, GONE_COLUMN)


def env_keys(runs: Iterable[FlatRun]) -> set[str]:
    return set().union(*(run.env for run in runs))


def extra_fields(runs: Iterable[FlatRun]) -> set[str]:
    return set().union(*(run.extra for run in runs))


_core_values = operator.itemgetter(*CORE_COLUMNS)


def build_frame(
    runs: Sequence[FlatRun],
    env_columns: Mapping[str, str],
    field_columns: Mapping[str, str],
) -> pd.DataFrame:
    """One chunk as a DataFrame with every column of the table, in table order.

    Keys the table knows but a run lacks are None, so an upsert clears values a run no longer
    has. ``dtype=object`` keeps None as None (pandas would otherwise turn it into NaN). Rows
    are assembled with C-level getters (itemgetter, map over dict.get): this is per run.
    """
    keys, names = list(env_columns), list(field_columns)
    columns = [*CORE_COLUMNS, *env_columns.values(), *field_columns.values()]
    if names:
        rows = [
            (*_core_values(run.columns), *map(run.env.get, keys), *map(run.extra.get, names))
            for run in runs
        ]
    else:
        rows = [(*_core_values(run.columns), *map(run.env.get, keys)) for run in runs]
    return pd.DataFrame(rows, columns=columns, dtype=object)
