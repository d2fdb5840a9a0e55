"""The fast JSON path gives exactly what the standard library gives, or falls back to it."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl import jsontext

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_loads_agrees_with_the_standard_library(value):
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert jsontext.loads(raw) == json.loads(raw)


@pytest.mark.parametrize("raw, expected", [
    (b'{"n": 123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
    (b'{"n": -9223372036854775809}', {"n": -9223372036854775809}),
    (b'{"s": "\\ud800"}', {"s": "\ud800"}),  # kept, so the transform can name the problem
])
def test_loads_keeps_what_orjson_would_change_or_refuse(raw, expected):
    assert jsontext.loads(raw) == expected


def test_loads_reads_an_overflowing_number_as_the_standard_library_does():
    assert math.isinf(jsontext.loads(b'{"x": 1e400}')["x"])


@pytest.mark.parametrize("raw", [b'{"a": ', b"\xff\xfe{}", b"nope"])
def test_loads_refuses_what_the_standard_library_refuses(raw):
    with pytest.raises(ValueError):
        jsontext.loads(raw)


@given(st.dictionaries(st.text(), st.text() | st.integers() | st.floats() | st.none()))
def test_dumps_is_compact_json_of_the_same_object(value):
    text = jsontext.dumps_object(value, strings_only=all(isinstance(v, str)
                                                         for v in value.values()))
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_dumps_falls_back_for_a_lone_surrogate():
    assert jsontext.dumps_object({"k": "\udc80"}, strings_only=True) == '{"k":"\udc80"}'
