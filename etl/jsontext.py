"""JSON in and out on the hot path: orjson where its result is exact, the standard library
where it is not.

Parsing and re-encoding are most of what a load does per run (``make bench``: orjson took
about a third of the standard library's time for both). orjson differs in three places, and
each falls back rather than change a value: it reads integers beyond 64 bits as floats, refuses
lone UTF-16 surrogates and infinities, and writes NaN as null.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# An integer literal orjson would turn into a float has 19 digits or more (a long digit run
# inside a string only costs the slower parser). Found as a run of 19 zeros once every digit
# reads as a zero: a C-speed copy and search, where the regex \d{19} took more time than
# orjson's parse itself (15 vs 6 us for a typical run).
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19
# Compact, as orjson writes, so a value reads the same whichever encoder wrote it.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def loads(raw: bytes) -> Any:
    """Parse UTF-8 JSON exactly as ``json.loads`` would (its errors included)."""
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library accepts surrogate escapes and 1e400, or says why not
    return json.loads(raw.decode("utf-8", "surrogatepass"))


def dumps_object(value: dict[str, Any], *, strings_only: bool) -> str:
    """A JSON object as compact text. orjson only when the caller has checked that every value
    is a string (``strings_only``): it writes non-finite floats as null and refuses integers
    beyond 64 bits."""
    if strings_only:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: let the caller's check name it
    return _encode(value)
