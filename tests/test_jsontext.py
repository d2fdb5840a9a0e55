"""The fast JSON path gives exactly what the standard library gives, or falls back to it."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsml_etl import jsontext

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_loads_agrees_with_the_standard_library(value):
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert jsontext.loads(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"n": 123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b'{"n": -9223372036854775809}', {"n": -9223372036854775809}),
        (b'{"s": "\\ud800"}', {"s": "\ud800"}),  # kept, so the transform can name the problem
    ],
)
def test_loads_keeps_what_orjson_would_change_or_refuse(raw, expected):
    assert jsontext.loads(raw) == expected


def test_loads_reads_an_overflowing_number_as_its_value_and_keeps_the_literal():
    # Regression: 1e400 was stored as Infinity, which is not JSON (PostgreSQL's ::jsonb and
    # the report crashed on it).
    value = jsontext.loads(b'{"x": 1e400}')["x"]
    assert math.isinf(value)
    assert value.literal == "1e400"
    assert jsontext.dumps({"x": value}) == '{"x":1e400}'


# A JSON number with a fraction or an exponent, as a sender may write it.
float_literals = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
).filter(lambda t: any(c in t for c in ".eE"))


@given(st.lists(float_literals, min_size=1, max_size=5))
def test_numbers_are_written_back_as_the_sender_wrote_them(literals):
    raw = (
        '{"envs":{'
        + ",".join(f'"k{i}":{t}' for i, t in enumerate(literals))
        + '},"l":['
        + ",".join(literals)
        + "]}"
    )
    value = jsontext.loads_exact(raw.encode())
    assert jsontext.dumps(value) == raw
    assert json.loads(jsontext.dumps(value, compact=False)) == json.loads(raw)


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b"[-Infinity]"])
def test_non_finite_constants_are_not_json_and_are_refused(raw):
    for loads in (jsontext.loads, jsontext.loads_exact):
        with pytest.raises(ValueError):
            loads(raw)


def test_has_inexact_float_tells_the_fast_parse_from_the_exact_one():
    raw = b'{"a": "x", "b": {"c": [1, 2.50]}}'
    assert jsontext.has_inexact_float(jsontext.loads(raw))
    assert not jsontext.has_inexact_float(jsontext.loads_exact(raw))
    assert jsontext.has_float(jsontext.loads_exact(raw))
    assert not jsontext.has_float(jsontext.loads(b'{"a": "1.5", "b": [1, {"c": null}]}'))


def test_a_non_finite_float_from_elsewhere_is_refused_rather_than_written_as_non_json():
    with pytest.raises(ValueError):
        jsontext.dumps({"a": [float("inf")]})


@pytest.mark.parametrize("raw", [b'{"a": ', b"\xff\xfe{}", b"nope"])
def test_loads_refuses_what_the_standard_library_refuses(raw):
    with pytest.raises(ValueError):
        jsontext.loads(raw)


@given(
    st.dictionaries(
        st.text(),
        st.text() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.none(),
    )
)
def test_dumps_is_compact_json_of_the_same_object(value):
    text = jsontext.dumps_object(
        value, strings_only=all(isinstance(v, str) for v in value.values())
    )
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_dumps_falls_back_for_a_lone_surrogate():
    assert jsontext.dumps_object({"k": "\udc80"}, strings_only=True) == '{"k":"\udc80"}'


def test_an_integer_longer_than_python_converts_parses_and_keeps_its_literal():
    # Regression: 5,000 digits were "HTTP 200 with a truncated or non-JSON body" (int() raises
    # past 4300 digits), retried as a transport problem, and the run failed.
    digits = "9" * 5000
    value = jsontext.loads(b'{"n": -' + digits.encode() + b"}")["n"]
    assert value.literal == "-" + digits
    assert jsontext.dumps({"n": value}) == '{"n":-' + digits + "}"


def test_nesting_is_measured_without_recursion_and_refused_past_what_parses():
    def nested(depth):
        return "[" * depth + "1" + "]" * depth

    assert not jsontext.deeper_than(json.loads(nested(jsontext.MAX_DEPTH)))
    assert jsontext.deeper_than(json.loads(nested(jsontext.MAX_DEPTH + 1)))
    assert jsontext.deeper_than(jsontext.loads(nested(1000).encode()))  # orjson reads 1024
    with pytest.raises(jsontext.TooDeep):  # RecursionError in the standard library's parser
        jsontext.loads(nested(100_000).encode())
