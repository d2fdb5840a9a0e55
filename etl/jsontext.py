"""JSON in and out on the hot path: orjson where its result is exact, the standard library
where it is not; and numbers kept as the sender wrote them.

Parsing and re-encoding are most of what a load does per run (``make bench``: orjson took
about a third of the standard library's time for both). orjson differs in four places, and
each falls back rather than change a value: it reads integers beyond 64 bits as floats, refuses
lone UTF-16 surrogates and out-of-range numbers (``1e400``), and writes NaN as null.

Numbers with a fraction or an exponent can be kept as the sender wrote them: :func:`loads_exact`
parses them as :class:`Number`, a float that remembers its literal, so ``1e400`` is written back
as ``1e400`` (not ``Infinity``, which is not JSON) and ``1.50`` as ``1.50``. :func:`loads` takes
orjson's fast path, whose floats have lost their literal; finding out whether a document holds
a float costs as much as parsing it, so the transform asks for an exact parse only where it
meets one (rare: the API documents env values as strings). Either way ``NaN`` and ``Infinity``
are refused: they are not JSON.
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
_encode_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_spaced = json.JSONEncoder(ensure_ascii=False).encode
# Levels of arrays and objects a run may nest (the run object is 1, its envs 2): the most
# whose envs and fields columns MariaDB's JSON functions still read. They read a document whose
# JSON_DEPTH (a scalar counted as a level) is at most 32: one more and json_valid() is 0 and
# the views lose every env key of the run; fields nests as deep as the run, and a scalar inside
# the deepest array is one more level. Real runs nest 2 or 3 (the API documents env values as
# strings). It also keeps the recursive walks (has_float, dumps: two Python frames a level) far
# inside Python's recursion limit of 1000; orjson parses up to 1024 levels, json about 990.
MAX_DEPTH = 31
_CONTAINERS = frozenset({dict, list})


class TooDeep(ValueError):
    """A JSON document nested deeper than the parser follows (far beyond :data:`MAX_DEPTH`):
    valid, perhaps, but the same body would be refused again, so not worth a retry."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested more than {MAX_DEPTH} levels deep")


class Number(float):
    """A JSON number with a fraction or an exponent, carrying the literal it was parsed from.

    It compares and computes as the float it denotes (``inf`` for ``1e400``); :func:`dumps`
    writes the literal back."""

    __slots__ = ("literal",)
    literal: str

    def __new__(cls, literal: str) -> Number:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number

    def __repr__(self) -> str:
        return f"Number({self.literal!r})"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _integer(literal: str) -> int | Number:
    """An integer literal as an int, or as a :class:`Number` keeping its digits where it is
    longer than Python converts (int() raises past ``sys.get_int_max_str_digits()``)."""
    try:
        return int(literal)
    except ValueError:
        return Number(literal)


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in a parsed value. Level by
    level without recursion; a level whose values hold no container costs one C-level set of
    types (the envs of nearly every run): about 2.5 us for a run object."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner: list[Any] = []
        for item in level:
            values = item.values() if type(item) is dict else item
            types = set(map(type, values))
            if dict in types or list in types:
                inner += [v for v in values if type(v) is dict or type(v) is list]
        level = inner
    return False


_FLOATS = frozenset({float, Number})
_PLAIN_FLOAT = frozenset({float})


def has_float(value: Any, kinds: frozenset[type] = _FLOATS) -> bool:
    """Whether a parsed value holds a value of one of ``kinds`` (floats, by default) anywhere.
    Sets of types are built in C: about a microsecond for a run object."""
    kind = type(value)
    if kind is dict:
        values = value.values()
    elif kind is list:
        values = value
    else:
        return kind in kinds
    types = set(map(type, values))
    if not types.isdisjoint(kinds):
        return True
    if dict in types or list in types:
        return any(has_float(item, kinds) for item in values if type(item) in (dict, list))
    return False


def has_inexact_float(value: Any) -> bool:
    """Whether a parsed value holds a float whose literal is lost (parsed by :func:`loads`)."""
    return has_float(value, _PLAIN_FLOAT)


def loads(raw: bytes) -> Any:
    """Parse UTF-8 JSON as ``json.loads`` would (its errors included), except that NaN and
    Infinity are refused, and a document nested too deep to parse is :class:`TooDeep`. Floats
    come back as plain floats, or as :class:`Number` where orjson could not parse them exactly
    (``1e400``, an integer of more than 4300 digits)."""
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library accepts surrogate escapes and 1e400, or says why not
    return loads_exact(raw)


def loads_exact(raw: bytes) -> Any:
    """Parse UTF-8 JSON keeping every number's literal (:class:`Number`); NaN and Infinity
    are refused, and a document nested too deep to parse is :class:`TooDeep`."""
    try:
        value = json.loads(
            raw.decode("utf-8", "surrogatepass"),
            parse_float=Number,
            parse_int=_integer,
            parse_constant=_refuse_constant,
        )
    except RecursionError:  # the parser's own limit, somewhat below 1000 levels
        raise TooDeep() from None
    return value


def dumps(value: Any, *, compact: bool = True) -> str:
    """``value`` as JSON text, non-ASCII kept; a :class:`Number` as its literal. ``compact``
    False puts a space after ``,`` and ``:`` as ``json.dumps`` does."""
    encode = _encode_compact if compact else _encode_spaced
    if not has_float(value):
        return encode(value)
    comma, colon = (",", ":") if compact else (", ", ": ")

    def write(item: Any) -> str:
        if isinstance(item, Number):
            return item.literal
        if isinstance(item, float):  # a float from elsewhere: JSON has no infinities
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError(f"{item!r} is not a JSON number")
            return encode(item)
        if type(item) is dict:
            return "{" + comma.join(encode(k) + colon + write(v) for k, v in item.items()) + "}"
        if type(item) is list:
            return "[" + comma.join(map(write, item)) + "]"
        return encode(item)

    return write(value)


def dumps_object(value: dict[str, Any], *, strings_only: bool) -> str:
    """A JSON object as compact text. orjson only when the caller has checked that every value
    is a string (``strings_only``): it writes non-finite floats as null and refuses integers
    beyond 64 bits."""
    if strings_only:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: let the caller's check name it
    return dumps(value)
