"""One malformed Get-run response fails alone, whatever it holds: the transform gives a row or
a per-run failure with a reason, never an exception that ends the export or the load.

Regressions (all exit 70, "unexpected ... this is a bug", with none of the good runs beside
them landing): gpuSvrCode "+-4" (ValueError from int()), a 5,000-digit gpuSvrCode string
(Python's int-conversion digit limit), envs or an undocumented field nested 1,000 deep
(RecursionError). A valid 5,000-digit integer literal was "HTTP 200 with a truncated or
non-JSON body", retried 5 times, and failed; an archive line holding any of these crashed
``load`` the same way, so a --save-raw archive could not be replayed."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime

import orjson
import pytest
from conftest import export_args, fetch_rows, write_pairs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nsml_etl
from nsml_etl.archive import iter_archive
from nsml_etl.pipeline import load_archive
from nsml_etl.testing.simulator import RawJson
from nsml_etl.transform import DOCUMENTED_FIELDS
from nsml_etl.warehouse import WRITE, Warehouse

GOOD = [("p", f"good{n}") for n in range(1, 5)]
DIGITS = "1" * 5000
TOO_DEEP = "nested more than 31 levels deep"


def _nested(depth: int) -> str:
    return "[" * depth + '"x"' + "]" * depth


def _run(run_name: str, envs: str) -> RawJson:
    return RawJson(f'{{"projectId": "p", "runName": "{run_name}", "envs": {envs}}}'.encode())


def _raw(run_name: str, fields: str) -> RawJson:
    return RawJson(
        f'{{"projectId": "p", "runName": "{run_name}", "status": "RUN_STATE_COMPLETED", '
        f'"envs": {{"A": "a"}}, {fields}}}'.encode()
    )


# run name -> (the body Get run answers, words of the failure reason; None: the run lands)
HOSTILE: dict[str, tuple[RawJson, str | None]] = {
    "plusminus": (_raw("plusminus", '"gpuSvrCode": "+-4"'), 'gpuSvrCode is "+-4", expected an'),
    "digitstring": (_raw("digitstring", f'"gpuSvrCode": "{DIGITS}"'), "expected an integer"),
    "digitnumber": (_raw("digitnumber", f'"gpuSvrCode": {DIGITS}'), "expected an integer"),
    "deepenvs": (_run("deepenvs", _nested(1000)), TOO_DEEP),
    "deepenvvalue": (_run("deepenvvalue", f'{{"K": {_nested(1000)}}}'), TOO_DEEP),
    "deepfield": (_raw("deepfield", f'"extraField": {_nested(1000)}'), TOO_DEEP),
    # Deeper than any JSON parser of Python follows: refused at once, not retried.
    "deeperstill": (_raw("deeperstill", f'"extraField": {_nested(100_000)}'), TOO_DEEP),
    # Quoted in the reason as its escape: no database stores a lone surrogate, and MariaDB
    # refused the failures row (UnicodeEncodeError, exit 70).
    "surrogate": (
        _raw("surrogate", '"gpuSvrCode": "\\ud800"'),
        'gpuSvrCode is "\\ud800", expected',
    ),
    # Valid JSON, stored as sent: the literal is the field's text.
    "bignumber": (_raw("bignumber", f'"bigField": {DIGITS}'), None),
}
FAILING = {name: words for name, (_, words) in HOSTILE.items() if words is not None}


def _simulator(make_simulator):
    sim = make_simulator(projects=0)
    for pair in GOOD:
        sim.put_run(*pair, {"projectId": pair[0], "runName": pair[1], "envs": {"A": pair[1]}})
    for name, (body, _) in HOSTILE.items():
        sim.put_run("p", name, body)
    return sim


def _pairs() -> list[tuple[str, str]]:
    names = list(HOSTILE)
    return GOOD[:2] + [("p", name) for name in names] + GOOD[2:]  # the bad ones mid-chunk


def _failures(db_url: str) -> dict[str, str]:
    rows = fetch_rows(db_url, "SELECT run_name, message FROM nsml_export_failures")
    return {row["run_name"]: row["message"] for row in rows}


def _landed(db_url: str) -> dict[str, dict]:
    return {row["run_name"]: row for row in fetch_rows(db_url, "SELECT * FROM nsml_runs")}


def _assert_each_failed_alone(db_url: str, failures: dict[str, str], landed: set[str]) -> None:
    assert set(_failures(db_url)) == set(failures)
    for name, message in _failures(db_url).items():
        assert failures[name] in message, (name, message)
    assert set(_landed(db_url)) == landed
    assert _landed(db_url)["bignumber"]["big_field"] == DIGITS
    (batch,) = fetch_rows(db_url, "SELECT status FROM nsml_export_batches")
    assert batch["status"] == "partial"


@pytest.mark.parametrize("chunk_size", ["100", "1"])
def test_export_fails_each_malformed_run_alone_and_lands_the_rest(
    run_cli, credentials, make_simulator, db_url, tmp_path, chunk_size
):
    sim = _simulator(make_simulator)
    pairs_file = write_pairs(tmp_path / "pairs.csv", _pairs())
    failures_out = tmp_path / "failed.csv"
    raw = str(tmp_path / "raw.jsonl")
    result = run_cli(
        *export_args(
            sim,
            pairs_file,
            db_url,
            "--chunk-size",
            chunk_size,
            "--failures-out",
            str(failures_out),
            "--save-raw",
            raw,
        )  # fmt: skip
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    _assert_each_failed_alone(db_url, FAILING, {*(n for _, n in GOOD), "bignumber"})
    with open(failures_out, encoding="utf-8", newline="") as handle:
        written = {row["run_name"]: row["reason"] for row in csv.DictReader(handle)}
    assert written == _failures(db_url)
    for name in FAILING:
        assert f"p/{name}" in result.stdout or name in result.stdout
    # Each body was asked for once: a body that parses the same every time is never retried.
    for name in HOSTILE:
        assert sim.stats.by_path[f"/nsml/v1/projects/p/runs/{name}"] == 1, name


def test_load_replays_an_archive_with_malformed_lines_line_by_line(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    """The --save-raw archive of that export replays: each bad line fails as FILE:LINE with
    its reason, the others load. A line nested deeper than the parser follows fails too."""
    sim = _simulator(make_simulator)
    archive = tmp_path / "raw.jsonl"
    first = run_cli(
        "export",
        "--pairs",
        str(write_pairs(tmp_path / "pairs.csv", _pairs())),
        "--db",
        f"sqlite:///{tmp_path / 'first.db'}",
        "--base-url",
        sim.base_url,
        "--save-raw",
        str(archive),
    )
    assert first.exit_code == 1, first.output
    # The body the client refused unparsed is not in the archive: add it as a plain run line.
    # And a record fetched at a time UTC cannot hold (OverflowError, exit 70): the load's time.
    with open(archive, "ab") as handle:
        handle.write(bytes(HOSTILE["deeperstill"][0]) + b"\n")
        handle.write(
            b'{"projectId":"p","runName":"yearone","fetchedAt":"0001-01-01T00:00:00+05:00",'
            b'"response":{"projectId":"p","runName":"yearone"}}\n'
        )
    lines = archive.read_bytes().splitlines()
    assert len(lines) == len(HOSTILE) + len(GOOD) + 1
    line_of = {
        re.search(rb'"runName": ?"([^"]+)"', line)[1].decode(): number  # type: ignore[index]
        for number, line in enumerate(lines, start=1)
    }

    result = run_cli("load", str(archive), "--db", db_url, "--chunk-size", "3")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    rows = fetch_rows(db_url, "SELECT run_name, message FROM nsml_export_failures")
    by_line = {row["message"].split(": ")[0]: row["message"] for row in rows}
    expected = {f"{archive}:{line_of[name]}": words for name, words in FAILING.items()}
    assert set(by_line) == set(expected), by_line
    for where, words in expected.items():
        assert words in by_line[where]
    assert set(_landed(db_url)) == {*(n for _, n in GOOD), "bignumber", "yearone"}
    assert _landed(db_url)["bignumber"]["big_field"] == DIGITS
    assert str(_landed(db_url)["yearone"]["fetched_at"])[:4] == str(datetime.now(UTC).year)


def test_python_api_export_and_load_fail_malformed_runs_alone(
    credentials, make_simulator, db_url, tmp_path
):
    sim = _simulator(make_simulator)
    archive = tmp_path / "raw.jsonl"
    report = nsml_etl.export(
        pairs=_pairs(), db_url=db_url, base_url=sim.base_url, save_raw=str(archive)
    )
    assert not report.ok and report.exit_code == 1
    assert {f.run_name: f.reason for f in report.failed}.keys() == FAILING.keys()
    for failure in report.failed:
        assert FAILING[failure.run_name] in failure.reason
    assert report.exported == len(GOOD) + 1
    _assert_each_failed_alone(db_url, FAILING, {*(n for _, n in GOOD), "bignumber"})

    replayed = nsml_etl.load(str(archive), db_url=f"sqlite:///{tmp_path / 'replayed.db'}")
    assert replayed.exit_code == 1
    assert replayed.exported == len(GOOD) + 1
    assert len(replayed.failed) == len(FAILING) - 1  # "deeperstill" was never archived


def test_a_run_nested_to_the_limit_lands_and_the_views_read_its_envs(run_cli, db_url, tmp_path):
    """31 levels (the run, its envs, 29 lists) land and read back through the views on every
    database; one level more fails that run alone, in envs or in any field. Regression: on
    MariaDB a run whose envs nested deeper than its JSON functions read (JSON_DEPTH 32) landed,
    and nsml_run_envs showed none of its env keys."""
    path = tmp_path / "runs.jsonl"
    lines = [
        _run("limit", f'{{"A": "a", "D": {_nested(29)}}}'),
        _run("over", f'{{"A": "a", "D": {_nested(30)}}}'),
        _raw("limitfield", f'"extra": {{"x": {_nested(29)}}}'),
        _raw("overfield", f'"extra": {{"x": {_nested(30)}}}'),
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 1, result.output
    assert set(_failures(db_url)) == {"over", "overfield"}
    for message in _failures(db_url).values():
        assert TOO_DEEP in message
    assert set(_landed(db_url)) == {"limit", "limitfield"}
    assert run_cli("views", "--db", db_url).exit_code == 0
    envs = fetch_rows(db_url, "SELECT run_name, env_key FROM nsml_run_envs")
    assert {(row["run_name"], row["env_key"]) for row in envs} == {
        ("limit", "A"),
        ("limit", "D"),
        ("limitfield", "A"),
    }


# -- the property: whatever JSON a body holds, a row or a failure ---------------------------

# JSON text rather than Python values, so that what no Python value writes is sent too: integer
# literals beyond 64 bits and beyond Python's 4300-digit conversion limit, 1e400, 1.50, lone
# surrogate escapes, duplicate keys, nesting past every parser's limit.
ODD_LITERALS = [
    "null",
    "true",
    "false",
    "-0.0",
    "1.50",
    "1e400",
    "-1e400",
    "1e-400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1" * 4300,
    "1" * 4301,
    "-" + DIGITS,
    '""',
    '"+-4"',
    '" 42 "',
    '"\u00b2"',
    '"-"',
    f'"{DIGITS}"',
    '"\\ud800"',
    '"a\\u0000b"',
    '"\\udc00\\ud800"',
    '"\\u202e\\ufeff\\u0301\\uffff"',
    '"' + "x" * 100_000 + '"',
]
ODD_KEYS = ['""', '"\\u0000"', '"\\ud800"', '"K\\u0000"', '"' + "K" * 3000 + '"', '"envs"']


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _object(members: list[str]) -> str:
    return "{" + ",".join(members) + "}"


def _nest(spec: tuple[str, int, bool]) -> str:
    value, depth, as_list = spec
    return "[" * depth + value + "]" * depth if as_list else '{"k":' * depth + value + "}" * depth


KEYS = st.sampled_from(ODD_KEYS) | st.text(max_size=8).map(_text)
LEAVES = st.one_of(
    st.sampled_from(ODD_LITERALS),
    st.integers().map(str),
    # NaN and the infinities as JSON allows them: orjson writes them as null.
    st.floats().map(lambda number: orjson.dumps(number).decode()),
    st.text().map(_text),
)
SHALLOW = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(KEYS, inner).map(":".join), max_size=4).map(_object)
    ),
    max_leaves=12,
)
# Deep, one value in eight: around MAX_DEPTH (31 levels, counting the body's own), and past
# orjson's 1024 and the standard library's ~990.
DEPTHS = st.integers(1, 1100) | st.integers(26, 34)
VALUES = st.one_of(SHALLOW, SHALLOW, SHALLOW, st.tuples(SHALLOW, DEPTHS, st.booleans()).map(_nest))
FIELD_NAMES = st.sampled_from([_text(name) for name in (*DOCUMENTED_FIELDS, "envs")]) | KEYS
ENVS = st.lists(st.tuples(KEYS, VALUES).map(":".join), max_size=4).map(
    lambda members: '"envs":' + _object(members)
)
MEMBERS = st.lists(st.tuples(FIELD_NAMES, VALUES).map(":".join) | ENVS, max_size=6)
# Most bodies name the pair they answer for; some name another, or none, or odd ones.
BODIES = st.tuples(st.booleans(), MEMBERS).map(
    lambda spec: _object(['"projectId":"p"', '"runName":"r"'] * spec[0] + spec[1])
)


# Examples per database: SQLite runs most of them; on the servers a few find what only their
# write path refuses (NUL, key lengths, packet size), at a transaction per example.
EXAMPLES = {"sqlite": 100, "postgresql": 25, "mysql": 25, "duckdb": 25}


def test_any_json_body_is_a_row_or_a_failure_never_an_exception(db_url, tmp_path):
    """Each body, as an archive record or a plain run line, beside a good line, through the
    archive reader, the transform and the write path (load): the good run lands, the other
    one lands or is a failure naming its line, and nothing raises."""
    warehouse = Warehouse.open(db_url, WRITE, table="nsml_runs")
    path = tmp_path / "runs.jsonl"

    @settings(
        max_examples=EXAMPLES[db_url.split(":")[0].split("+")[0]],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(body=BODIES, archived=st.booleans())
    def one_body(body: str, archived: bool) -> None:
        line = body.encode("utf-8", "surrogatepass")
        if archived:
            line = b'{"projectId":"p","runName":"r","fetchedAt":"2026-01-01T00:00:00",'
            line += b'"response":' + body.encode("utf-8", "surrogatepass") + b"}"
        path.write_bytes(b'{"projectId":"p","runName":"good","envs":{"A":"a"}}\n' + line + b"\n")
        report = load_archive(iter_archive(path), warehouse, chunk_size=2)
        assert report.requested == 2
        assert report.exported + len(report.failed) == 2, report.failed
        assert all(failure.reason.startswith(f"{path}:2: ") for failure in report.failed)

    try:
        one_body()
    finally:
        warehouse.close()
    assert {row["run_name"] for row in fetch_rows(db_url, "SELECT run_name FROM nsml_runs")} >= {
        "good"
    }
