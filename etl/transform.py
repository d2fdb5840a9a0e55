"""Run JSON -> flat records -> DataFrame.

A run is flattened once, when it arrives (:func:`flatten_run`): documented fields to their
columns, ``envs`` to JSON text plus one value per key, undocumented top-level fields kept by
name. Column names for env keys and extra fields come from the database's mapping tables, so
the frame for a chunk is built later (:func:`build_frame`) from already-flattened records.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from .pairs import Pair

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
# not list the run leaves the stored ones alone (see LIST_TIME_COLUMNS in load).
LIST_TIME_COLUMNS = ("create_time", "update_time")
CORE_COLUMNS: tuple[str, ...] = (
    *DOCUMENTED_FIELDS.values(), "envs", "fetched_at", *LIST_TIME_COLUMNS
)
KEY_COLUMNS = ("project_id", "run_name")
# Statuses a run never leaves: --skip-finished does not fetch runs stored with one of these.
TERMINAL_STATUSES = frozenset({
    "RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_STOPPED", "RUN_STATE_CANCELED",
})
_SURROGATE = re.compile("[\ud800-\udfff]")
# Largest value a BIGINT column holds.
_BIGINT_MAX = 2**63 - 1


class RunShapeError(ValueError):
    """A response that is valid JSON but cannot be stored faithfully; the pair fails."""


@dataclass(slots=True)
class FlatRun:
    """One run, flattened: fixed columns, env values by key, extra fields by API name."""

    columns: dict[str, Any]
    env: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, str | None] = field(default_factory=dict)

    @property
    def pair(self) -> Pair:
        return Pair(self.columns["project_id"], self.columns["run_name"])


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
    return _check_unicode(json.dumps(value, ensure_ascii=False), what)


def as_integer(value: Any, what: str) -> int | None:
    """An integer column: ints, integral floats and digit strings; anything else is refused."""
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    if number is None or abs(number) > _BIGINT_MAX:
        raise RunShapeError(f"{what} is {json.dumps(value, ensure_ascii=False)[:80]}, "
                            "expected an integer")
    return number


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def flatten_run(body: Any, pair: Pair, fetched_at: datetime) -> FlatRun:
    """Flatten one Get-run response for ``pair``; raises :class:`RunShapeError` to reject it."""
    if not isinstance(body, dict):
        raise RunShapeError(f"response is {_type_name(body)}, expected a run object")
    for api_name, requested in (("projectId", pair.project_id), ("runName", pair.run_name)):
        sent = body.get(api_name)
        if sent is not None and as_text(sent, api_name) != requested:
            raise RunShapeError(
                f"response is for {api_name} {str(sent)[:80]!r}, not the requested {requested!r}"
            )
    columns: dict[str, Any] = {}
    for api_name, column in DOCUMENTED_FIELDS.items():
        if column == "gpu_svr_code":
            columns[column] = as_integer(body.get(api_name), api_name)
        else:
            columns[column] = as_text(body.get(api_name), api_name)
    columns["project_id"], columns["run_name"] = pair.project_id, pair.run_name

    envs = body.get(ENVS_FIELD)
    env: dict[str, str | None] = {}
    if envs is None:
        columns["envs"] = None
    elif isinstance(envs, dict):
        envs_text = json.dumps(envs, ensure_ascii=False)
        # One scan of the JSON text covers every key and value (the hot path of a load).
        if not envs_text.isascii() and _SURROGATE.search(envs_text):
            raise RunShapeError("envs holds a lone UTF-16 surrogate")
        env = {
            key: value if type(value) is str else as_text(value, key)
            for key, value in envs.items()
        }
        columns["envs"] = envs_text
    else:
        raise RunShapeError(f"envs is {_type_name(envs)}, expected an object")
    columns["fetched_at"] = fetched_at
    columns["create_time"] = columns["update_time"] = None

    extra = {
        _check_unicode(name, "a field name"): as_text(value, name)
        for name, value in body.items()
        if name not in DOCUMENTED_FIELDS and name != ENVS_FIELD
    }
    return FlatRun(columns=columns, env=env, extra=extra)


# Columns that record when we looked, not what the run is: a change in them is no new version.
OBSERVATION_COLUMNS = ("fetched_at", *LIST_TIME_COLUMNS)
_content_values = operator.itemgetter(*(c for c in CORE_COLUMNS if c not in OBSERVATION_COLUMNS))


def content_hash(run: FlatRun) -> str:
    """A fingerprint of what the run is (not when we saw it), cheap enough to take for every
    run: repr() of the values is deterministic, unlike hash()."""
    values = (_content_values(run.columns), tuple(run.extra.items()))
    return hashlib.sha256(repr(values).encode("utf-8", "surrogatepass")).hexdigest()


def env_keys(runs: Iterable[FlatRun]) -> set[str]:
    return {key for run in runs for key in run.env}


def extra_fields(runs: Iterable[FlatRun]) -> set[str]:
    return {name for run in runs for name in run.extra}


def build_frame(
    runs: Sequence[FlatRun],
    env_columns: Mapping[str, str],
    field_columns: Mapping[str, str],
) -> pd.DataFrame:
    """One chunk as a DataFrame with every column of the table, in table order.

    Keys the table knows but a run lacks are None, so an upsert clears values a run no longer
    has. ``dtype=object`` keeps None as None (pandas would otherwise turn it into NaN).
    """
    env_items = list(env_columns.items())
    field_items = list(field_columns.items())
    columns = [*CORE_COLUMNS, *(c for _, c in env_items), *(c for _, c in field_items)]
    rows = [
        [
            *(run.columns[c] for c in CORE_COLUMNS),
            *(run.env.get(key) for key, _ in env_items),
            *(run.extra.get(name) for name, _ in field_items),
        ]
        for run in runs
    ]
    return pd.DataFrame(rows, columns=columns, dtype=object)
