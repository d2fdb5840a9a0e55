import json
import re
from datetime import datetime

import pytest

from nsml_etl import jsontext
from nsml_etl.errors import RunShapeError
from nsml_etl.pairs import Pair
from nsml_etl.transform import CORE_COLUMNS, build_frame, flatten_run

PAIR = Pair("proj", "3")
NOW = datetime(2026, 11, 27, 1, 2, 3)


def test_documented_fields_env_values_and_extras():
    body = {
        "runName": "3",
        "projectId": "proj",
        "projectName": "비전",
        "gpuSvrCode": "205",
        "command": 'python "a"\nb',
        "envs": {"LR": "0.1", "n": 3, "flag": True, "o": {"a": 1}},
        "runType": "BATCH",
        "createTime": "2026-01-01 00:00:00",
        "nested": [1, "x"],
    }
    run = flatten_run(body, PAIR, NOW)
    assert run.columns["gpu_svr_code"] == 205
    assert run.columns["project_name"] == "비전" and run.columns["status"] is None
    assert json.loads(run.columns["envs"]) == body["envs"]
    assert run.env == {"LR": "0.1", "n": "3", "flag": "true", "o": '{"a": 1}'}
    assert run.extra == {
        "runType": "BATCH",
        "createTime": "2026-01-01 00:00:00",
        "nested": '[1, "x"]',
    }
    assert run.columns["fetched_at"] == NOW


def test_envs_json_is_lossless_unicode_intact():
    envs = {"학습률": '값 "q"\n', "": "empty key", "a.b": ""}
    text = flatten_run({"envs": envs}, PAIR, NOW).columns["envs"]
    assert json.loads(text) == envs and "학습률" in text


def test_missing_and_null_fields_are_null():
    run = flatten_run({}, PAIR, NOW)
    assert run.columns["envs"] is None and run.env == {} and run.extra == {}
    assert run.columns["project_id"] == "proj" and run.columns["run_name"] == "3"
    assert flatten_run({"envs": None, "note": None}, PAIR, NOW).columns["note"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "response is a list"),
        ("text", "response is a string"),
        ({"envs": ["A=1"]}, "envs is a list"),
        ({"envs": "A=1"}, "envs is a string"),
        ({"gpuSvrCode": "abc"}, 'gpuSvrCode is "abc", expected an integer'),
        ({"gpuSvrCode": 1.5}, "gpuSvrCode is 1.5"),
        ({"gpuSvrCode": True}, "gpuSvrCode is true"),
        ({"gpuSvrCode": 2**70}, "expected an integer"),
        ({"runName": "4"}, "runName '4', not the requested '3'"),
        ({"projectId": "other"}, "projectId 'other'"),
        ({"note": "\ud800"}, "note holds a lone UTF-16 surrogate"),
        ({"envs": {"k": "a\udfffb"}}, "envs holds a lone UTF-16 surrogate"),
    ],
)
def test_wrong_shapes_are_rejected_with_a_reason(body, message):
    with pytest.raises(RunShapeError, match=re.escape(message)):
        flatten_run(body, PAIR, NOW)


def test_numeric_run_name_in_body_matches_text_request():
    assert flatten_run({"runName": 3, "gpuSvrCode": 7.0}, PAIR, NOW).columns["gpu_svr_code"] == 7


def test_frame_has_every_table_column_and_none_for_missing_keys():
    runs = [
        flatten_run({"envs": {"A": "1"}}, PAIR, NOW),
        flatten_run({"envs": {}, "x": 1}, Pair("proj", "4"), NOW),
    ]
    frame = build_frame(runs, {"A": "env_a", "gone": "env_gone"}, {"x": "x"})
    assert list(frame.columns) == [*CORE_COLUMNS, "env_a", "env_gone", "x"]
    records = frame.to_dict("records")
    assert records[0]["env_a"] == "1" and records[0]["env_gone"] is None
    assert records[1]["env_a"] is None and records[1]["x"] == "1"


def test_a_float_met_in_a_stored_value_keeps_its_literal_through_an_exact_parse():
    raw = b'{"envs": {"LR": 1.50, "S": "x"}, "score": 1E+2, "note": [2.0e-7]}'
    calls = []

    def exact():
        calls.append(1)
        return jsontext.loads_exact(raw)

    run = flatten_run(jsontext.loads(raw), Pair("p", "1"), NOW, exact)
    assert calls == [1]
    assert run.columns["envs"] == '{"LR":1.50,"S":"x"}'
    assert (run.env["LR"], run.extra["score"], run.columns["note"]) == ("1.50", "1E+2", "[2.0e-7]")


def test_a_run_without_floats_is_never_parsed_twice():
    raw = b'{"envs": {"LR": "1.50"}, "gpuSvrCode": 205, "n": [1, 2]}'
    run = flatten_run(jsontext.loads(raw), Pair("p", "1"), NOW, lambda: pytest.fail("parsed twice"))
    assert run.env == {"LR": "1.50"} and run.extra == {"n": "[1, 2]"}
